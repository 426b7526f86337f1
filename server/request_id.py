"""Request ids: every response carries ``X-Request-ID`` and every log line of that request carries the id.

The id comes from the caller's ``X-Request-ID`` header when it is sane (1-128 characters of
``A-Z a-z 0-9 - _ . : /``), otherwise a fresh uuid4 hex. It lives in a ``ContextVar`` set for the duration
of the request; worker threads started with ``anyio.to_thread`` copy the context, so log lines written
during inference carry it too. :class:`RequestIdFilter` puts it on every log record as ``request_id``
(``-`` outside a request) so a formatter can print ``%(request_id)s``.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9\-_.:/]{1,128}")

request_id_var: ContextVar[str | None] = ContextVar("sam3_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served in this context (None outside a request)."""
    return request_id_var.get()


def accept_or_generate(value: str | None) -> str:
    """The caller's id when it is sane (no spaces, control characters or log-injection), else a new one."""
    if value is not None and _SANE.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current request's id, or ``-``) to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        return True


class RequestIdMiddleware:
    """Outermost middleware: picks the request id, exposes it to the code below, and adds the header to
    whatever response goes out (errors, 413s and CORS preflights included)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = None
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                raw = value.decode("latin-1")
                break
        request_id = accept_or_generate(raw)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
