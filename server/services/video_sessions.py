"""What a tracking session is on the service's side, and how its results and errors go on the wire: the typed
``Session`` (the predictor's ``VideoSession`` plus busy/cancel state, idle and heartbeat clocks), the
``FramePrompt`` a route hands over, ``frame_to_wire``, the video read errors as service errors, and the
loader's limits from the settings. Used by the tracking service, ``/media/frame`` previews and the export route.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from server.errors import BadValue, Forbidden, ServiceError, TooLarge, UnsupportedMedia
from server.mask_codec import MaskFormat, encode_mask
from server.prompts import Box
from server.settings import Settings

if TYPE_CHECKING:
    from sam3.inference.propagation import Propagation
    from sam3.inference.video_state import FrameResult, VideoSession


@dataclass
class Session:
    """One tracking session: the predictor's typed session plus what the service needs around it."""

    session_id: str
    video: VideoSession | None = None  # None while the video is being opened
    last_used: float = field(default_factory=time.monotonic)
    users: int = 0  # requests working on it right now; a session in use is never idle
    propagation: Propagation | None = None
    cancel: bool = False  # set by /track/cancel, /track/stop or expiry: the propagation stops before its next frame
    # Set with ``cancel``: wakes a streamed propagation waiting for its reader (server.stream_sender); a new
    # one for each propagation.
    cancelled: anyio.Event = field(default_factory=anyio.Event)
    closing: bool = False  # removed from the table while in use: the last user frees it
    created: float = field(default_factory=time.time)  # wall clock, for GET /track/sessions
    heartbeat_at: float | None = None  # monotonic time of the last /track/heartbeat (None: never sent one)

    @property
    def ready(self) -> bool:
        return self.video is not None

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def expires_in(self, ttl_s: float, heartbeat_s: float, now: float) -> float:
        """Seconds until the idle sweep closes it: the idle TTL, or the heartbeat timeout once it sent one."""
        left = ttl_s - (now - self.last_used)
        if self.heartbeat_at is not None:
            left = min(left, heartbeat_s - (now - self.heartbeat_at))
        return left

    def request_cancel(self) -> None:
        """Stop the running propagation before its next frame, whatever its reader is doing."""
        self.cancel = True
        self.cancelled.set()


@dataclass(frozen=True)
class FramePrompt:
    """A validated prompt in wire units: pixel points, normalised cxcywh boxes."""

    frame_idx: int
    text: str | None
    points: list[tuple[float, float]] | None
    labels: list[int] | None
    boxes: list[Box] | None
    box_labels: list[int] | None
    obj_id: int | None


def frame_to_wire(result: FrameResult, mask_format: MaskFormat = "png") -> dict:
    """One predictor frame result -> the contract's ``{frame_idx, object_ids, scores, masks, boxes}``."""
    return {
        "frame_idx": int(result.frame_idx),
        "object_ids": [int(i) for i in result.obj_ids],
        "scores": [float(s) for s in result.scores],
        "masks": [encode_mask(m, mask_format) for m in result.masks],
        "boxes": [[float(v) for v in b] for b in result.boxes_xyxy],
    }


async def frames_to_wire(results: list[FrameResult], mask_format: MaskFormat) -> list[dict]:
    """Encode frame results in a worker thread (CPU work, not under the model lock)."""
    if not results:
        return []
    return await anyio.to_thread.run_sync(lambda: [frame_to_wire(r, mask_format) for r in results])


def video_error(exc: Exception) -> ServiceError:
    """A video the loader refuses -> the HTTP error naming ``video_path``."""
    from sam3.inference.media_paths import VideoForbidden, VideoTooLarge, VideoUnsupported

    kind = (
        Forbidden
        if isinstance(exc, VideoForbidden)
        else TooLarge
        if isinstance(exc, VideoTooLarge)
        else (UnsupportedMedia if isinstance(exc, VideoUnsupported) else BadValue)
    )
    return kind(f"video_path: {exc}")


def video_limits(settings: Settings):
    """The loader's limits (``sam3.inference.video_io.VideoLimits``) from the settings: sessions and
    ``/media/frame`` read videos under the same ones."""
    from sam3.inference.video_io import VideoLimits

    return VideoLimits(
        max_frames=settings.max_video_frames,
        max_side=settings.max_video_side,
        max_pixels=settings.max_video_pixels,
        cache_mb=settings.video_cache_mb,
        refuse_hardlinks=settings.media_refuse_hardlinks,
    )
