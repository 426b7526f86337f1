"""The HTTP pieces shared by the ingress and the model replicas under Ray Serve: the ``X-Replica`` header,
the answers made outside the FastAPI app (410 lost session, 503 replica gone) with the same edge as the app's
own (``X-Request-ID``, CORS, ``{"detail": ...}``), and running an ASGI app as a generator of its messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message

from server.request_id import RequestIdMiddleware
from server.settings import Settings

REPLICA_HEADER = "X-Replica"
# The key of the response-start message that tells the ingress which replica (unique id) answered.
REPLICA_KEY = "sam3.replica"
# What the ingress forwards of the client's ASGI scope (the rest is the server's and does not pickle).
_SCOPE_KEYS = ("type", "asgi", "http_version", "method", "scheme", "path", "raw_path", "root_path", "query_string")


def replica_name(deployment: str, unique_id: str) -> str:
    """The stable name of a replica in ``X-Replica``: its deployment and Ray Serve's unique replica id."""
    return f"{deployment}#{unique_id}"


def stamp_replica(message: Message, name: str) -> None:
    """Add ``X-Replica`` to a response-start message (and let a browser page read it, like the app's own)."""
    headers = MutableHeaders(scope=message)
    headers[REPLICA_HEADER] = name
    exposed = headers.get("access-control-expose-headers")
    if exposed is not None and REPLICA_HEADER.lower() not in exposed.lower():
        headers["access-control-expose-headers"] = f"{exposed}, {REPLICA_HEADER}"


def wire_scope(scope: dict) -> dict:
    """The picklable part of an HTTP scope, to run the same request in another process."""
    out = {key: scope[key] for key in _SCOPE_KEYS if key in scope}
    out["headers"] = [(bytes(k), bytes(v)) for k, v in scope.get("headers") or ()]
    for key in ("client", "server"):
        if scope.get(key) is not None:
            out[key] = tuple(scope[key])
    return out


def lost_session_detail(session_id: str, replica: str) -> str:
    return (
        f"session_id: session {session_id!r} was lost with the replica that held it ({replica} stopped); "
        "start a new one with /track/start"
    )


def error_app(settings: Settings, status: int, detail: str, headers: dict[str, str] | None = None) -> ASGIApp:
    """A JSON error answer with the app's edge around it: ``X-Request-ID`` and the CORS headers."""
    response = JSONResponse({"detail": detail}, status_code=status, headers=headers)
    cors = CORSMiddleware(
        response,
        allow_origins=settings.cors_origin_list,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["Retry-After", "X-Request-ID", REPLICA_HEADER],
    )
    return RequestIdMiddleware(cors)


async def run_asgi(app: ASGIApp, scope: dict, body: bytes) -> AsyncIterator[Message]:
    """Run one HTTP request through ``app`` and yield what it sends, as it sends it (streamed answers too).

    The body is delivered at once; after it, ``receive`` waits until the consumer goes away (then the app
    sees ``http.disconnect``, as it would from a server whose client hung up).
    """
    queue: asyncio.Queue[Message | None] = asyncio.Queue()
    gone = asyncio.Event()
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if gone.is_set():
            raise OSError("the client went away")
        await queue.put(message)

    async def run() -> None:
        try:
            await app(dict(scope, state={}), receive, send)
        finally:
            await queue.put(None)

    task = asyncio.create_task(run())
    try:
        while (message := await queue.get()) is not None:
            yield message
        await task  # an exception the app let out (a bug) reaches the caller
    finally:
        gone.set()
        if not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 -- the consumer left; nothing to report to
                pass


class Lifespan:
    """Runs an app's lifespan (startup ... shutdown) in a task of its own, as a server would: ``start`` returns
    once the startup ran (raising what it raised), ``stop`` runs the shutdown in the same task."""

    def __init__(self, app) -> None:
        self.app = app
        self._started = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        started = asyncio.create_task(self._started.wait())
        await asyncio.wait({self._task, started}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            started.cancel()
            self._task.result()  # the startup's exception
            raise RuntimeError("the app's lifespan ended during startup")

    async def _run(self) -> None:
        async with self.app.router.lifespan_context(self.app):
            self._started.set()
            await self._stop.wait()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
