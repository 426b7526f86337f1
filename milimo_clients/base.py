"""Sending a ``Call``: the sync client on ``httpx.Client``, the async one on ``httpx.AsyncClient``.

Both share everything but the I/O: the address (``SAM_SERVICE_URL``), the time budget, the retry policy
(``retry.py``), the error mapping (``errors.py``) and the request building (the ``Call`` each manager
method makes). A manager method returns ``self._execute(call)``: the result on a sync client, an awaitable
of the same result on an async one.

``timeout`` is a total budget per call, not a per-read timeout: connecting, waiting, reading slowly
dripping headers or body and every retry together end within it (``SamServiceTimeout``). The async client
bounds the call with a cancel scope; the sync client clamps every network wait to the time left
(``deadline.py``; with a caller's own ``client=`` it checks the clock between body chunks instead).
Streamed answers (``propagate_stream``) are the exception: there ``timeout`` is the longest silence between
two lines, since a long video may stream for longer than any fixed budget.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import tenacity

from milimo_clients.call import Call
from milimo_clients.deadline import current_deadline, deadline_client
from milimo_clients.errors import (
    SamProtocolError,
    SamServiceError,
    SamServiceNotRunning,
    SamServiceTimeout,
    error_for_response,
    json_body,
)
from milimo_clients.retry import DEFAULT_RETRY, RetryPolicy, tenacity_kwargs

DEFAULT_SERVICE_URL = "http://localhost:8001"
#: Where masks go when a call is given no ``output_path`` (``SAM_OUTPUT_DIR``, else ./sam_masks).
DEFAULT_OUTPUT_DIR = "sam_masks"


def service_url(base_url: str | None = None) -> str:
    """``base_url``, else the process environment's ``SAM_SERVICE_URL`` (a ``.env`` file is not read), else
    ``http://localhost:8001``."""
    return (base_url or os.environ.get("SAM_SERVICE_URL") or DEFAULT_SERVICE_URL).rstrip("/")


class _ClientConfig:
    """What both clients hold; no I/O here."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 300.0,
        connect_timeout: float = 5.0,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        output_dir: str | os.PathLike | None = None,
    ):
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeout: must be > 0 seconds")
        self.base_url = service_url(base_url)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.retry = retry
        self.output_dir = Path(output_dir or os.environ.get("SAM_OUTPUT_DIR") or DEFAULT_OUTPUT_DIR)

    def _http_timeout(self, remaining: float) -> tuple[float, float, float, float]:
        """(connect, read, write, pool) seconds: a tuple, which every httpx-compatible client takes (an
        ``httpx.Timeout`` is refused by httpx2 2.17's clients, e.g. Starlette's TestClient passed as ``http``)."""
        return (min(self.connect_timeout, remaining), remaining, remaining, remaining)

    def _transport_error(self, exc: httpx.HTTPError, call: Call) -> SamServiceError:
        if isinstance(exc, httpx.ConnectError):
            return SamServiceNotRunning(
                f"the SAM 3 service is not running at {self.base_url} ({exc}). Start it with ./run_sam.sh "
                "(it serves on SAM_SERVICE_HOST:SAM_SERVICE_PORT, default 127.0.0.1:8001), or point "
                "SAM_SERVICE_URL at the address where it runs"
            )
        if isinstance(exc, httpx.TimeoutException):
            return self._timeout_error(call, type(exc).__name__)
        return SamServiceError(f"request to the SAM 3 service at {self.base_url} failed: {exc}")

    def _timeout_error(self, call: Call, why: str = "budget spent") -> SamServiceTimeout:
        return SamServiceTimeout(
            f"the SAM 3 service at {self.base_url} did not answer {call.method} {call.path} within the "
            f"{self.timeout:g} s budget of this call ({why})"
        )

    def _checked(self, response: httpx.Response, call: Call) -> httpx.Response:
        if not response.is_success:
            raise error_for_response(response, call.method, call.path, self.base_url)
        return response

    def _stream_headers_checked(self, response: httpx.Response, call: Call) -> None:
        """Before reading a stream: an error status or a body that is not NDJSON is raised as such."""
        self._checked(response, call)
        kind = response.headers.get("content-type", "")
        if "ndjson" not in kind:
            raise SamProtocolError(
                f"{call.method} {call.path}: expected a streamed application/x-ndjson answer, got {kind or 'no content-type'}",
                response.status_code,
                response=response,
            )

    @staticmethod
    def _line(line: str, call: Call) -> dict[str, Any]:
        try:
            event = json.loads(line)
        except ValueError:
            raise SamProtocolError(f"{call.method} {call.path}: a streamed line is not JSON: {line[:200]!r}") from None
        if not isinstance(event, dict):
            raise SamProtocolError(f"{call.method} {call.path}: a streamed line is not a JSON object: {line[:200]!r}")
        return event


class ServiceClient(_ClientConfig):
    """Synchronous client: one ``httpx.Client`` per manager (or the one passed as ``client``)."""

    def __init__(self, base_url: str | None = None, *, client: httpx.Client | None = None, **kwargs: Any):
        super().__init__(base_url, **kwargs)
        self._client = client or deadline_client()
        self._owns_client = client is None

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _execute(self, call: Call) -> Any:
        return call.parse(self._send(call))

    def _send(self, call: Call) -> httpx.Response:
        """The 2xx answer (body read) after the retries the policy allows, or the mapped error."""
        deadline = time.monotonic() + self.timeout
        for attempt in tenacity.Retrying(
            sleep=time.sleep, **tenacity_kwargs(self.retry, call.idempotent, self.timeout)
        ):
            with attempt:
                return self._checked(self._attempt(call, deadline), call)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _attempt(self, call: Call, deadline: float) -> httpx.Response:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout_error(call)
        url = f"{self.base_url}{call.path}"
        token = current_deadline.set(deadline)  # every network wait of this attempt ends by the deadline
        try:
            with self._client.stream(
                call.method, url, timeout=self._http_timeout(remaining), **call.request_kwargs()
            ) as streamed:
                raw = []
                for chunk in streamed.iter_raw():
                    raw.append(chunk)
                    if time.monotonic() > deadline:
                        raise self._timeout_error(call, "answer still arriving")
                response = httpx.Response(
                    streamed.status_code, headers=streamed.headers, content=b"".join(raw), request=streamed.request
                )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, call) from None
        finally:
            current_deadline.reset(token)
        response.read()  # decodes any Content-Encoding
        return response

    def _lines(self, call: Call) -> Iterator[dict[str, Any]]:
        """The JSON objects of a streamed NDJSON answer, each as soon as its line arrives."""
        url = f"{self.base_url}{call.path}"
        try:
            with self._client.stream(
                call.method, url, timeout=self._http_timeout(self.timeout), **call.request_kwargs()
            ) as response:
                if not response.is_success or "ndjson" not in response.headers.get("content-type", ""):
                    response.read()
                self._stream_headers_checked(response, call)
                for line in response.iter_lines():
                    if line.strip():
                        yield self._line(line, call)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, call) from None

    def health(self) -> dict:
        return self._execute(Call("GET", "/health", lambda r: json_body(r, "GET", "/health"), idempotent=True))


class AsyncServiceClient(_ClientConfig):
    """Asynchronous client on ``httpx.AsyncClient``: the same calls, awaited; the event loop stays free."""

    def __init__(self, base_url: str | None = None, *, client: httpx.AsyncClient | None = None, **kwargs: Any):
        super().__init__(base_url, **kwargs)
        self._client = client or httpx.AsyncClient()
        self._owns_client = client is None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _execute(self, call: Call) -> Any:
        response = await self._send(call)
        return await anyio.to_thread.run_sync(call.parse, response)  # parsing may write files: off the loop

    async def _send(self, call: Call) -> httpx.Response:
        deadline = time.monotonic() + self.timeout
        retrying = tenacity.AsyncRetrying(
            sleep=anyio.sleep, **tenacity_kwargs(self.retry, call.idempotent, self.timeout)
        )
        try:
            with anyio.fail_after(self.timeout):
                async for attempt in retrying:
                    with attempt:
                        return self._checked(await self._attempt(call, deadline), call)
        except TimeoutError:
            raise self._timeout_error(call) from None
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _attempt(self, call: Call, deadline: float) -> httpx.Response:
        remaining = max(deadline - time.monotonic(), 1e-3)
        try:
            return await self._client.request(
                call.method,
                f"{self.base_url}{call.path}",
                timeout=self._http_timeout(remaining),
                **call.request_kwargs(),
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, call) from None

    async def _lines(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        url = f"{self.base_url}{call.path}"
        try:
            async with self._client.stream(
                call.method, url, timeout=self._http_timeout(self.timeout), **call.request_kwargs()
            ) as response:
                if not response.is_success or "ndjson" not in response.headers.get("content-type", ""):
                    await response.aread()
                self._stream_headers_checked(response, call)
                async for line in response.aiter_lines():
                    if line.strip():
                        yield self._line(line, call)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, call) from None

    async def health(self) -> dict:
        return await self._execute(Call("GET", "/health", lambda r: json_body(r, "GET", "/health"), idempotent=True))
