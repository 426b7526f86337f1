"""The HTTP protocol in front of the app: uvicorn's httptools protocol with a bound on the request head and the
service's JSON error shape for what the parser refuses.

    uvicorn server.main:app --http server.http_edge:EdgeHttpProtocol    (run_sam.sh passes it)

uvicorn's httptools protocol puts no bound on the request line and headers (a 2 MB header is buffered and
passed on), and answers a request it cannot parse with a plain-text 400 that carries neither the JSON body nor
``X-Request-ID``. This subclass counts the bytes of each request's head as they arrive and answers 431
``{"detail": "headers: ..."}`` past ``SAM_MAX_HEADER_KB``, and turns the parser's 400 into
``{"detail": "request: ..."}``; both carry a fresh ``X-Request-ID`` and close the connection (after reading
and dropping, for a moment, what the client still sends: an abrupt close would reset the connection and lose
the answer). A bare
``uvicorn server.main:app`` (without ``--http``) keeps uvicorn's own behaviour.
"""

from __future__ import annotations

import json
import logging
import uuid
from functools import cache

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from server.request_id import HEADER as REQUEST_ID_HEADER

log = logging.getLogger("sam3.server")

# After a refusal the connection lingers: what the client still sends is read and dropped (at most this long and
# this much), so that its kernel does not answer our close with a reset that destroys the answer unread.
LINGER_S = 2.0
LINGER_BYTES = 4 * 1024 * 1024


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a head over the limit."""


@cache
def head_limit_bytes() -> int:
    """``SAM_MAX_HEADER_KB`` in bytes, read once per process (the protocol is built per connection)."""
    from server.settings import Settings

    return Settings().max_header_kb * 1024


class EdgeHttpProtocol(HttpToolsProtocol):
    """httptools protocol + a bound on the request head + JSON answers for refused requests."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._head_limit = head_limit_bytes()
        self._in_head = True  # bytes before a message's headers are complete belong to its head
        self._head_bytes = 0
        self._dropped: int | None = None  # bytes dropped after a refusal (None: not refused)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    # The parser hands over the URL and each header as they complete: counted exactly. A head still incomplete
    # is counted by the bytes received (below), so the parser never buffers much more than the limit.
    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self._head_limit:
            raise _HeadTooLarge  # the parser stops and reports an error: answered with 431 below

    def data_received(self, data: bytes) -> None:
        if self._dropped is not None:  # refused: lingering until the client stops sending
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.close()
            return
        in_head = self._in_head
        super().data_received(data)
        if self._dropped is not None or self.transport.is_closing() or not (in_head and self._in_head):
            return
        # The head began before this read and is still incomplete: all of it is head.
        self._head_bytes += len(data)
        if self._head_bytes > self._head_limit:
            self._refuse_head()

    def _refuse_head(self) -> None:
        log.warning("request head over %d KB refused (SAM_MAX_HEADER_KB)", self._head_limit // 1024)
        self._in_head = False
        kb = self._head_limit // 1024
        self._refuse(431, f"headers: the request line and headers are over {kb} KB (SAM_MAX_HEADER_KB)")

    def send_400_response(self, msg: str) -> None:
        if self._head_bytes > self._head_limit:  # raised by _count inside a parser callback
            self._refuse_head()
        else:
            self._refuse(400, f"request: {msg.rstrip('.').lower()}")

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` with the service's JSON error and close the connection."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a response is under way on this connection: nothing else can be sent
            return
        body = json.dumps({"detail": detail}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            REQUEST_ID_HEADER.lower().encode() + b": " + uuid.uuid4().hex.encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self._dropped = 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()  # idempotent; reading is what lets the client finish sending
        self.loop.call_later(LINGER_S, self.transport.close)
