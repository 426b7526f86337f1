"""A tiny starlette app under a real uvicorn on 127.0.0.1 (in a thread) that answers what a test scripts:
429/503 with ``Retry-After``, HTML from a "proxy", a body dripped a byte at a time, NDJSON lines with
pauses, a slow answer. It stands for what the real service cannot be made to do on demand (or for the
network in between), and records what it received (bytes, fields, times) for the assertions."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.clients.conftest import free_port

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c6360000000020001e221bc330000000049454e44ae426082"
)

# A script answers one request: (request, received record) -> starlette Response
Script = Callable[[Request, dict[str, Any]], Any]


@dataclass
class Received:
    path: str
    at: float
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # name -> (filename, content type, sha256)
    body: bytes = b""


class ThreadedUvicorn:
    """Any ASGI app under a real uvicorn on a free 127.0.0.1 port, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        )
        self._thread: threading.Thread | None = None

    def start(self, delay_s: float = 0.0):
        """Start serving, after ``delay_s`` (to test a client that starts before the service)."""

        def run() -> None:
            time.sleep(delay_s)
            self._server.run()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if delay_s == 0:
            self.wait_started()
        return self

    def wait_started(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)


class ScriptedServer(ThreadedUvicorn):
    def __init__(self) -> None:
        self.scripts: dict[str, list[Script]] = {}
        self.received: list[Received] = []
        super().__init__(Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])]))

    def script(self, path: str, *answers: Script) -> None:
        """Answer the next requests to ``path`` with ``answers`` in order (the last one repeats)."""
        self.scripts[path] = list(answers)
        self.received = [r for r in self.received if r.path != path]

    def hits(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def slack_s(self) -> float:
        """Room for this machine's scheduling in an upper time bound: 1 s plus 20 times the slowest of five
        unscripted round trips to this server (on a quiet machine about 1 s, more on a loaded one). Upper
        bounds are the test's own durations plus this, never a figure tuned to one machine."""
        import httpx

        trips = []
        for _ in range(5):
            start = time.monotonic()
            httpx.get(f"{self.url}/__slack_probe", timeout=30)
            trips.append(time.monotonic() - start)
        self.received = [r for r in self.received if r.path != "/__slack_probe"]
        return 1.0 + 20 * max(trips)

    async def _handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        record = Received(path, time.monotonic())
        if request.headers.get("content-type", "").startswith("multipart/"):
            form = await request.form()
            for key, value in form.multi_items():
                if hasattr(value, "read"):
                    data = await value.read()
                    record.files[key] = (value.filename, value.content_type, hashlib.sha256(data).hexdigest())
                else:
                    record.fields[key] = value
        else:
            record.body = await request.body()
        self.received.append(record)
        answers = self.scripts.get(path)
        if not answers:
            return Response('{"detail": "not scripted"}', 404, media_type="application/json")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        result = answer(request, record)
        return await result if asyncio.iscoroutine(result) else result


# ------------------------------------------------------------------ answers
def png(request: Request, record: Received) -> Response:
    return Response(PNG_1x1, media_type="image/png", headers={"X-Mask-Score": "0.5", "X-Image-ID": "img-1"})


def json_answer(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Script:
    return lambda request, record: Response(body, status, media_type="application/json", headers=headers)


def busy(retry_after: str) -> Script:
    return json_answer(
        '{"detail": "queue: too many requests waiting, retry shortly"}', 429, {"Retry-After": retry_after}
    )


def loading(retry_after: str | None = "1") -> Script:
    headers = {"Retry-After": retry_after} if retry_after else None
    return json_answer('{"detail": "model not loaded: still loading, retry shortly"}', 503, headers)


def html(status: int, headers: dict[str, str] | None = None) -> Script:
    page = "<html><body><h1>503 Service Temporarily Unavailable</h1><hr>nginx</body></html>"
    return lambda request, record: Response(page, status, media_type="text/html", headers=headers)


def drip(every_s: float, total_bytes: int = 1000) -> Script:
    """200 JSON whose body comes one byte every ``every_s`` seconds (never a silence of a read timeout)."""

    async def body():
        yield b"{"
        for _ in range(total_bytes):
            await asyncio.sleep(every_s)
            yield b" "
        yield b"}"

    return lambda request, record: StreamingResponse(body(), media_type="application/json")


def slow(seconds: float, then: Script) -> Script:
    async def answer(request: Request, record: Received) -> Response:
        await asyncio.sleep(seconds)
        return then(request, record)

    return answer


def ndjson(lines: list[str], pause_s: float, sent: list[float] | None = None) -> Script:
    """A streamed NDJSON answer: one line, then ``pause_s``, then the next; ``sent`` gets each line's time."""

    async def body():
        for k, line in enumerate(lines):
            if k:
                await asyncio.sleep(pause_s)
            if sent is not None:
                sent.append(time.monotonic())
            yield (line + "\n").encode()

    return lambda request, record: StreamingResponse(body(), media_type="application/x-ndjson")
