"""``TrackingManager`` / ``AsyncTrackingManager``: video object tracking sessions (``/track/*``).

``propagate`` returns every frame at the end; ``propagate_stream`` yields each frame as the service
computes it (NDJSON), with a progress callback, and stops the propagation on the service when the caller
stops iterating (closing the stream disconnects; the service stops within one frame). ``cancel`` stops a
propagation from elsewhere; frames computed so far stay in the session (``get_frames``).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from milimo_clients.base import AsyncServiceClient, ServiceClient
from milimo_clients.call import Call, plain_json
from milimo_clients.errors import SamProtocolError, error_for_status, json_body, missing_field
from milimo_clients.export import write_tracking_export
from milimo_clients.masks import mask_array, wire_mask

Progress = Callable[[int, int], None]  # (frames done, frames planned)


@dataclass(frozen=True)
class TrackingSession:
    session_id: str
    num_frames: int
    width: int
    height: int
    fps: float | None


@dataclass(frozen=True)
class FrameResult:
    """Objects on one frame. ``masks`` (aligned with ``object_ids``) are 0/255 PNG bytes at the video size,
    or COCO RLE dicts with ``mask_format="rle"``; ``mask_array(k)`` decodes either."""

    frame_idx: int
    object_ids: list[int]
    scores: list[float]
    masks: list[bytes | dict] = field(repr=False)
    boxes: list[list[float]]  # pixel x0, y0, x1, y1

    @property
    def num_objects(self) -> int:
        return len(self.object_ids)

    def mask_array(self, k: int):
        return mask_array(self.masks[k])

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FrameResult:
        return cls(
            frame_idx=int(body["frame_idx"]),
            object_ids=[int(i) for i in body["object_ids"]],
            scores=[float(s) for s in body["scores"]],
            masks=[wire_mask(m) for m in body["masks"]],
            boxes=[[float(v) for v in b] for b in body["boxes"]],
        )


@dataclass(frozen=True)
class PropagationResult:
    session_id: str
    direction: str
    num_frames_processed: int
    frames: list[FrameResult]
    # objects a detect-then-track rule removed during the propagation: {"obj_id", "rule", "detail", ...}
    removed_objects: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class UploadedMedia:
    """A video (or zip of frames) stored by ``POST /media/upload``: ``video_path`` goes to ``start_session``."""

    video_path: str
    num_frames: int
    width: int
    height: int
    fps: float | None


@dataclass(frozen=True)
class SessionInfo:
    """One open session as ``GET /track/sessions`` lists it (times are Unix seconds)."""

    session_id: str
    video_path: str
    num_frames: int
    created: float
    last_used: float
    busy: bool
    frames_computed: int


EXPORT_FORMATS = ("png_zip", "rle_json", "matte_mp4")


class _StreamState:
    """Reads the NDJSON events of ``/track/propagate`` with ``stream: true`` (contract, Extensions)."""

    def __init__(self, call: Call, on_progress: Progress | None):
        self.call = call
        self.on_progress = on_progress
        self.total: int | None = None
        self.done = 0
        self.cancelled = False
        self.num_frames_processed: int | None = None
        self.finished = False

    def feed(self, event: dict[str, Any]) -> FrameResult | None:
        kind = event.get("event")
        try:
            if kind == "start":
                self.total = int(event["total"])
                return None
            if kind == "frame":
                frame = FrameResult.from_json(event)
                self.done = int(event["done"])
                self.total = int(event.get("total", self.total or 0))
                if self.on_progress is not None:
                    self.on_progress(self.done, self.total)
                return frame
            if kind == "end":
                self.num_frames_processed = int(event["num_frames_processed"])
                self.cancelled = bool(event.get("cancelled", False))
                self.finished = True
                return None
            if kind == "error":
                self.finished = True
                raise error_for_status(int(event["status"]), str(event["detail"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SamProtocolError(f"{self.call.path}: bad {kind!r} line ({type(exc).__name__}: {exc})") from None
        raise SamProtocolError(f"{self.call.path}: unknown stream event {kind!r}")

    def check_finished(self) -> None:
        if not self.finished:
            raise SamProtocolError(
                f"{self.call.path}: the stream ended before its last line (after {self.done} frames)"
            )


class _StreamView:
    def __init__(self, state: _StreamState):
        self._state = state

    total = property(lambda self: self._state.total, doc="frames planned (after the first line)")
    done = property(lambda self: self._state.done, doc="frames received so far")
    cancelled = property(lambda self: self._state.cancelled, doc="True when the propagation was cancelled")
    num_frames_processed = property(lambda self: self._state.num_frames_processed, doc="from the last line")


class PropagationStream(_StreamView):
    """Iterate for ``FrameResult`` objects as they arrive; ``close()`` (or leaving the ``with`` block)
    disconnects, which stops the propagation on the service."""

    def __init__(self, lines: Iterator[dict[str, Any]], state: _StreamState):
        super().__init__(state)
        self._lines = lines

    def __iter__(self) -> Iterator[FrameResult]:
        for event in self._lines:
            frame = self._state.feed(event)
            if frame is not None:
                yield frame
        self._state.check_finished()

    def close(self) -> None:
        self._lines.close()

    def __enter__(self) -> PropagationStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncPropagationStream(_StreamView):
    """``async for frame in stream``; ``await stream.aclose()`` disconnects (stops the propagation)."""

    def __init__(self, lines: AsyncIterator[dict[str, Any]], state: _StreamState):
        super().__init__(state)
        self._lines = lines

    async def __aiter__(self) -> AsyncIterator[FrameResult]:
        async for event in self._lines:
            frame = self._state.feed(event)
            if frame is not None:
                yield frame
        self._state.check_finished()

    async def aclose(self) -> None:
        await self._lines.aclose()

    async def __aenter__(self) -> AsyncPropagationStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def _json_call(path: str, body: dict[str, Any], idempotent: bool, read: Callable[[dict[str, Any]], Any]) -> Call:
    def parse(response):
        data = json_body(response, "POST", path)
        try:
            return read(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise missing_field(exc, "POST", path, response) from None

    return Call("POST", path, parse=parse, idempotent=idempotent, json=plain_json(body))


def _propagate_body(session_id, direction, start_frame, max_frames, mask_format) -> dict[str, Any]:
    body: dict[str, Any] = {"session_id": session_id, "direction": direction, "max_frames": int(max_frames)}
    if start_frame is not None:
        body["start_frame"] = int(start_frame)
    if mask_format != "png":
        body["mask_format"] = mask_format
    return body


class _TrackingCalls:
    """The method bodies of both tracking managers (request building and answer reading, once)."""

    _execute: Callable[[Call], Any]

    def start_session(self, video_path: str | os.PathLike, session_id: str | None = None):
        """Open a session on a video file or a folder of JPEG/PNG frames (a path the service can read)."""
        body: dict[str, Any] = {"video_path": str(video_path)}
        if session_id is not None:
            body["session_id"] = session_id
        read = lambda d: TrackingSession(
            d["session_id"],
            int(d["num_frames"]),
            int(d["width"]),
            int(d["height"]),
            None if d.get("fps") is None else float(d["fps"]),
        )  # noqa: E731
        return self._execute(_json_call("/track/start", body, False, read))

    def add_prompt(
        self,
        session_id: str,
        frame_idx: int,
        text: str | None = None,
        points: Sequence[Sequence[float]] | None = None,
        labels: Sequence[int] | None = None,
        boxes: Sequence[Sequence[float]] | Sequence[float] | None = None,
        obj_id: int | None = None,
        *,
        mask_format: str = "png",
    ):
        """Prompt one frame with text, pixel points (labels default to 1) and/or normalised cxcywh boxes."""
        body: dict[str, Any] = {"session_id": session_id, "frame_idx": int(frame_idx)}
        for key, value in {"text": text, "points": points, "labels": labels, "boxes": boxes, "obj_id": obj_id}.items():
            if value is not None:
                body[key] = value
        if mask_format != "png":
            body["mask_format"] = mask_format
        return self._execute(_json_call("/track/prompt", body, False, FrameResult.from_json))

    def propagate(
        self,
        session_id: str,
        direction: str = "both",
        start_frame: int | None = None,
        max_frames: int = -1,
        *,
        mask_format: str = "png",
    ):
        """Track the prompted objects through the video (``max_frames=-1``: all frames); one answer at the end."""
        body = _propagate_body(session_id, direction, start_frame, max_frames, mask_format)
        read = lambda d: PropagationResult(
            d["session_id"],
            d["direction"],
            int(d["num_frames_processed"]),
            [FrameResult.from_json(f) for f in d["frames"]],
            list(d.get("removed_objects") or []),
        )  # noqa: E731
        return self._execute(_json_call("/track/propagate", body, False, read))

    def propagate_stream(
        self,
        session_id: str,
        direction: str = "both",
        start_frame: int | None = None,
        max_frames: int = -1,
        *,
        mask_format: str = "png",
        on_progress: Progress | None = None,
    ):
        """A ``PropagationStream`` (``AsyncPropagationStream`` on the async manager) of frames as they are
        computed; ``on_progress(done, total)`` after each. The request is sent when iteration starts."""
        body = _propagate_body(session_id, direction, start_frame, max_frames, mask_format)
        body["stream"] = True
        call = _json_call("/track/propagate", body, False, lambda d: d)
        return self._open_stream(call, _StreamState(call, on_progress))

    def cancel(self, session_id: str):
        """Stop the session's running propagation; False when none was running."""
        return self._execute(
            _json_call("/track/cancel", {"session_id": session_id}, True, lambda d: bool(d["cancelled"]))
        )

    def get_frames(
        self, session_id: str, start: int | None = None, end: int | None = None, *, mask_format: str = "png"
    ):
        """The stored results of frames already computed (``start``..``end``), in frame order."""
        body: dict[str, Any] = {"session_id": session_id}
        if start is not None:
            body["start"] = int(start)
        if end is not None:
            body["end"] = int(end)
        if mask_format != "png":
            body["mask_format"] = mask_format
        return self._execute(
            _json_call("/track/frames", body, True, lambda d: [FrameResult.from_json(f) for f in d["frames"]])
        )

    def remove_object(self, session_id: str, obj_id: int):
        """Forget one object everywhere in the session; False when it was not there."""
        body = {"session_id": session_id, "obj_id": int(obj_id)}
        return self._execute(_json_call("/track/remove_object", body, True, lambda d: bool(d["removed"])))

    def reset(self, session_id: str):
        """Drop every prompt and result of the session (the video stays loaded)."""
        return self._execute(_json_call("/track/reset", {"session_id": session_id}, True, lambda d: bool(d["reset"])))

    def stop_session(self, session_id: str):
        """Close the session and free its memory; False if it was unknown or already closed."""
        return self._execute(_json_call("/track/stop", {"session_id": session_id}, True, lambda d: bool(d["closed"])))

    def upload_media(self, media: str | os.PathLike | bytes, filename: str | None = None):
        """Upload a video file or a zip of JPEG/PNG frames (a path, or bytes with ``filename``) into the service's
        media roots; returns ``UploadedMedia`` (its ``video_path`` opens with ``start_session``)."""
        if isinstance(media, (bytes, bytearray, memoryview)):
            if not filename:
                raise ValueError("filename: give the file name (with its extension) of uploaded bytes")
            data = bytes(media)
        else:
            filename = filename or os.path.basename(os.fspath(media))
            with open(media, "rb") as fh:
                data = fh.read()
        mime = "application/zip" if filename.lower().endswith(".zip") else "application/octet-stream"

        def parse(response):
            d = json_body(response, "POST", "/media/upload")
            try:
                fps = None if d.get("fps") is None else float(d["fps"])
                return UploadedMedia(d["video_path"], int(d["num_frames"]), int(d["width"]), int(d["height"]), fps)
            except (KeyError, TypeError, ValueError) as exc:
                raise missing_field(exc, "POST", "/media/upload", response) from None

        return self._execute(Call("POST", "/media/upload", parse, False, files={"file": (filename, data, mime)}))

    def export(
        self,
        session_id: str,
        format: str,
        output_path: str | os.PathLike,
        obj_ids: Sequence[int] | None = None,
        start: int | None = None,
        end: int | None = None,
    ):
        """Save the session's masks as ``png_zip``, ``rle_json`` or ``matte_mp4`` (``POST /track/export``);
        ``output_path`` is a file, or a folder for the service's file name. Returns the path written."""
        if format not in EXPORT_FORMATS:
            raise ValueError(f"format: one of {', '.join(EXPORT_FORMATS)}, not {format!r}")
        body: dict[str, Any] = {"session_id": session_id, "format": format}
        if obj_ids is not None:
            body["obj_ids"] = [int(i) for i in obj_ids]
        if start is not None:
            body["start"] = int(start)
        if end is not None:
            body["end"] = int(end)

        def parse(response):
            target = os.fspath(output_path)
            if os.path.isdir(target):
                match = re.search(r'filename="([^"/\\]+)"', response.headers.get("content-disposition", ""))
                target = os.path.join(target, match.group(1) if match else f"{session_id}_{format}")
            with open(target, "wb") as fh:
                fh.write(response.content)
            return target

        return self._execute(Call("POST", "/track/export", parse, True, json=body))

    def list_sessions(self):
        """Every open session on the service (any client's), oldest first: a list of ``SessionInfo``."""

        def parse(response):
            d = json_body(response, "GET", "/track/sessions")
            try:
                return [
                    SessionInfo(
                        s["session_id"],
                        s["video_path"],
                        int(s["num_frames"]),
                        float(s["created"]),
                        float(s["last_used"]),
                        bool(s["busy"]),
                        int(s["frames_computed"]),
                    )
                    for s in d["sessions"]
                ]
            except (KeyError, TypeError, ValueError) as exc:
                raise missing_field(exc, "GET", "/track/sessions", response) from None

        return self._execute(Call("GET", "/track/sessions", parse, True))

    def heartbeat(self, session_id: str):
        """Keep a session alive; from then on the service closes it when no heartbeat comes for
        ``SAM_SESSION_HEARTBEAT_S``. Returns the seconds left until then."""
        body = {"session_id": session_id}
        return self._execute(_json_call("/track/heartbeat", body, True, lambda d: float(d["expires_in"])))

    @staticmethod
    def save_results(session_id: str, frames: Sequence[FrameResult | dict], out_dir: str | os.PathLike) -> str:
        """Write ``masks/<frame>_<obj>.png`` per object (from PNG or RLE frames) and ``manifest.json`` under
        ``out_dir``; returns the manifest path. A plain function on both managers (no service call)."""
        write_tracking_export(session_id, frames, out_dir)
        return os.path.join(str(out_dir), "manifest.json")


class TrackingManager(_TrackingCalls, ServiceClient):
    """Client of ``/track/*``. Propagation of a long video on a CPU can take many minutes: the default
    budget per call is 30 minutes (``timeout``); prefer ``propagate_stream`` for progress."""

    def __init__(self, base_url: str | None = None, *, timeout: float = 1800.0, **kwargs: Any):
        super().__init__(base_url, timeout=timeout, **kwargs)

    def _open_stream(self, call: Call, state: _StreamState) -> PropagationStream:
        return PropagationStream(self._lines(call), state)


class AsyncTrackingManager(_TrackingCalls, AsyncServiceClient):
    """``TrackingManager`` on ``httpx.AsyncClient``: the same methods, awaited (``propagate_stream`` is
    used with ``async for``)."""

    def __init__(self, base_url: str | None = None, *, timeout: float = 1800.0, **kwargs: Any):
        super().__init__(base_url, timeout=timeout, **kwargs)

    def _open_stream(self, call: Call, state: _StreamState) -> AsyncPropagationStream:
        return AsyncPropagationStream(self._lines(call), state)
