"""A streamed response that a slow or stalled reader cannot hold up: bounded buffering and a send timeout.

Starlette's ``StreamingResponse`` pulls the next chunk only after the previous one went out, so a client that
stops reading (a full socket buffer) suspends the producer at its ``yield``: a propagation stalled there never
sees ``/track/cancel`` or ``/track/stop``, and its session stays busy and in memory until the socket closes.

:class:`BoundedStreamingResponse` decouples the two. The producer (the body iterator) runs in its own task and
puts its chunks into an :class:`Outbox` of at most ``buffer_chunks``; the sender takes them out and sends each
within ``send_timeout_s`` (``SAM_STREAM_SEND_TIMEOUT_S``), else the stream ends there (the producer is closed,
so a propagation keeps the frames it computed, and the server closes the connection, the response being
incomplete). When ``stop`` is set (a cancel or a stop of the session) the producer no longer waits for room:
it runs to its end at once (a propagation stops before its next frame) and what it still writes is kept for
the reader on top of the bound (a cancelled propagation writes its held-back frames and one ``end`` line).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterable, Mapping
from contextlib import aclosing

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Send

log = logging.getLogger("sam3.server")


class Outbox:
    """Chunks between one producer and one sender, on the event loop: ``put`` waits while ``bound`` chunks
    are waiting, unless :meth:`release` was called; ``get`` returns ``None`` once closed and empty."""

    def __init__(self, bound: int):
        self.bound = max(1, bound)
        self.chunks: deque[bytes] = deque()
        self.released = False
        self.closed = False
        self._room = anyio.Event()
        self._ready = anyio.Event()

    async def put(self, chunk: bytes) -> None:
        while len(self.chunks) >= self.bound and not self.released:
            self._room = anyio.Event()
            await self._room.wait()
        self.chunks.append(chunk)
        self._ready.set()

    async def get(self) -> bytes | None:
        while not self.chunks:
            if self.closed:
                return None
            self._ready = anyio.Event()
            await self._ready.wait()
        chunk = self.chunks.popleft()
        self._room.set()
        return chunk

    def release(self) -> None:
        """Let the producer run to its end without waiting for the reader."""
        self.released = True
        self._room.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()


class BoundedStreamingResponse(StreamingResponse):
    """``StreamingResponse`` with a producer task, at most ``buffer_chunks`` chunks waiting for the reader,
    a per-chunk ``send_timeout_s``, and ``stop`` (an ``anyio.Event``) that releases the producer."""

    def __init__(
        self,
        content: AsyncIterable[bytes],
        *,
        send_timeout_s: float,
        buffer_chunks: int,
        stop: anyio.Event | None = None,
        media_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(content, media_type=media_type, headers=headers)
        self.send_timeout_s = send_timeout_s
        self.buffer_chunks = buffer_chunks
        self.stop = stop
        self.timed_out = False

    async def stream_response(self, send: Send) -> None:
        outbox = Outbox(self.buffer_chunks)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._produce, outbox)
            if self.stop is not None:
                tasks.start_soon(self._release_on_stop, outbox)
            if not await self._send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}, send
            ):
                tasks.cancel_scope.cancel()
                return
            while (chunk := await outbox.get()) is not None:
                if not await self._send({"type": "http.response.body", "body": chunk, "more_body": True}, send):
                    tasks.cancel_scope.cancel()  # closes the producer: a propagation keeps what it computed
                    return
            tasks.cancel_scope.cancel()  # the stop watcher
        await self._send({"type": "http.response.body", "body": b"", "more_body": False}, send)

    async def _send(self, message: dict, send: Send) -> bool:
        """Send one message within the timeout; False (and the stream ends, incomplete) when the reader did
        not take it in time. Cancelling uvicorn's ``send`` is safe: it waits for the socket to drain before
        it writes anything."""
        with anyio.move_on_after(self.send_timeout_s):
            await send(message)
            return True
        self.timed_out = True
        log.warning(
            "stream reader took nothing for %.3g s (SAM_STREAM_SEND_TIMEOUT_S): ending the stream", self.send_timeout_s
        )
        return False

    async def _produce(self, outbox: Outbox) -> None:
        try:
            async with aclosing(self.body_iterator) as chunks:
                async for chunk in chunks:
                    await outbox.put(chunk if isinstance(chunk, bytes) else bytes(chunk))
        finally:
            outbox.close()

    async def _release_on_stop(self, outbox: Outbox) -> None:
        await self.stop.wait()
        outbox.release()
