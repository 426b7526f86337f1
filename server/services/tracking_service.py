"""Video tracking sessions behind ``/track/*``: the session table, its cap and idle expiry, and the lazily
built video predictor.

The predictor is built on the first ``/track`` call that needs it, from the already loaded image model (the
same weights; no second copy of the 860M parameters). Every predictor call goes through
``ModelService.call`` so that tracking and image requests never run on the model at the same time.

The session table lives on the event loop (only async code touches it); a slot is reserved before the
predictor starts loading frames, so concurrent ``/track/start`` calls cannot overshoot ``SAM_MAX_SESSIONS``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np

from server.errors import BadValue, Conflict, NotFound, ServiceError, TooBusy, Unavailable
from server.mask_codec import mask_to_b64png
from server.prompts import Box
from server.services.model_service import ModelService, describe_error, to_numpy
from server.settings import Settings
from server.video_probe import MediaInfo

log = logging.getLogger("sam3.server")


@dataclass
class Session:
    session_id: str
    media: MediaInfo
    last_used: float = field(default_factory=time.monotonic)
    ready: bool = False  # False while the predictor is still loading its frames

    def touch(self) -> None:
        self.last_used = time.monotonic()


@dataclass(frozen=True)
class FramePrompt:
    """A validated prompt in wire units: pixel points, normalised cxcywh boxes."""

    frame_idx: int
    text: str | None
    points: list[tuple[float, float]] | None
    labels: list[int] | None
    boxes: list[Box] | None
    obj_id: int | None


def _get(result: Any, *names: str, default: Any = None) -> Any:
    """Read the first present field among ``names`` from a dataclass/object or a dict."""
    for name in names:
        if isinstance(result, dict) and name in result:
            return result[name]
        if not isinstance(result, dict) and hasattr(result, name):
            return getattr(result, name)
    return default


def mask_box_xyxy(mask: np.ndarray) -> list[float]:
    """Pixel ``[x0, y0, x1, y1]`` around a boolean mask, max index inclusive (as the official video output
    and our predictor's ``boxes_xyxy``); zeros for an empty mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs[0]), float(ys[0]), float(xs[-1]), float(ys[-1])]


def frame_to_wire(result: Any, frame_idx: int | None, width: int, height: int) -> dict:
    """One predictor frame result -> the contract's ``{frame_idx, object_ids, scores, masks, boxes}``.

    Boxes are the predictor's pixel ``boxes_xyxy`` when it gives them, else computed from the masks.
    """
    idx = _get(result, "frame_idx", "frame_index", default=frame_idx)
    ids = to_numpy(_get(result, "object_ids", "obj_ids", "out_obj_ids", default=[])).reshape(-1)
    scores = to_numpy(_get(result, "scores", "probs", "out_probs", default=[])).reshape(-1)
    masks = to_numpy(_get(result, "masks", "binary_masks", "out_binary_masks", default=np.zeros((0, height, width))))
    masks = masks.reshape(-1, *masks.shape[-2:]) if masks.size else np.zeros((0, height, width), bool)
    masks = masks > 0.5 if masks.dtype != np.bool_ else masks
    boxes = _get(result, "boxes_xyxy", default=None)
    if boxes is not None:
        boxes = to_numpy(boxes).reshape(-1, 4).astype(np.float64)
        boxes = [[float(v) for v in b] for b in boxes] if len(boxes) == len(masks) else None
    return {
        "frame_idx": int(idx),
        "object_ids": [int(i) for i in ids],
        "scores": [float(s) for s in scores],
        "masks": [mask_to_b64png(m) for m in masks],
        "boxes": boxes if boxes is not None else [mask_box_xyxy(m) for m in masks],
    }


class TrackingService:
    """Sessions of the video predictor, with a cap, idle expiry and a lazily built predictor."""

    def __init__(self, settings: Settings, models: ModelService):
        self.settings = settings
        self.models = models
        self.predictor: Any = None
        self.predictor_error: str | None = None
        self.sessions: dict[str, Session] = {}
        self.frames_propagated = 0  # frames processed by propagations since start (for /metrics)

    # ------------------------------------------------------------------ predictor
    @property
    def predictor_loaded(self) -> bool:
        return self.predictor is not None

    async def ensure_predictor(self) -> Any:
        """The video predictor, built on first use from the loaded image model (503 when impossible)."""
        if self.predictor is not None:
            return self.predictor
        self.models.require_loaded()
        await self.models.call(self._build_predictor_sync)
        if self.predictor is None:
            raise Unavailable(f"video predictor not available: {self.predictor_error}")
        return self.predictor

    def _build_predictor_sync(self) -> None:
        if self.predictor is not None:
            return
        try:
            from sam3.inference.video_predictor import Sam3VideoPredictor

            # the same Sam3Model object as the image processor: one copy of the weights
            self.predictor, self.predictor_error = Sam3VideoPredictor(self.models.model), None
            log.info("video predictor ready (sharing the image model's weights)")
        except Exception as exc:  # missing module, incompatible model, out of memory...
            self.predictor_error = describe_error(exc)
            log.error("video predictor not available: %s", self.predictor_error)

    # ------------------------------------------------------------------ session table
    def _retry_after_s(self) -> float:
        now = time.monotonic()
        remaining = [self.settings.session_ttl_s - (now - s.last_used) for s in self.sessions.values()]
        return max(1.0, min(remaining, default=1.0))

    def get(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise NotFound(f"session_id: unknown or expired session {session_id!r} (start one with /track/start)")
        if not session.ready:
            raise Conflict(f"session_id: session {session_id!r} is still starting")
        return session

    async def evict_expired(self) -> list[str]:
        """Close every session idle for longer than ``SAM_SESSION_TTL_S``."""
        now = time.monotonic()
        expired = [
            sid for sid, s in self.sessions.items() if s.ready and now - s.last_used > self.settings.session_ttl_s
        ]
        for sid in expired:
            log.info("session %s expired after %.0f s idle", sid, now - self.sessions[sid].last_used)
            await self._close(sid)
        return expired

    async def _close(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        if self.predictor is not None:
            await self.models.call(self._close_sync, session_id)
        return True

    def _close_sync(self, session_id: str) -> None:
        try:
            self.predictor.close_session(session_id)
        except Exception as exc:  # closing must not fail the caller; the session is gone from our table
            log.warning("close_session(%s) failed: %s", session_id, describe_error(exc))
        try:
            from sam3.device import empty_cache

            empty_cache(self.models.device)
        except Exception:
            pass

    async def close_all(self) -> None:
        for sid in list(self.sessions):
            await self._close(sid)

    # ------------------------------------------------------------------ requests
    async def start(self, media: MediaInfo, session_id: str | None) -> Session:
        await self.evict_expired()
        if session_id is not None and session_id in self.sessions:
            raise Conflict(f"session_id: a session named {session_id!r} already exists")
        if len(self.sessions) >= self.settings.max_sessions:
            raise TooBusy(
                f"session_id: {len(self.sessions)} tracking sessions are open, the limit is "
                f"{self.settings.max_sessions} (SAM_MAX_SESSIONS); stop one with /track/stop or retry later",
                retry_after_s=self._retry_after_s(),
            )
        self.models.require_loaded()
        sid = session_id or uuid.uuid4().hex
        session = Session(sid, media)
        self.sessions[sid] = session  # reserve the slot before any await
        try:
            predictor = await self.ensure_predictor()
            info = await self._call_predictor(
                lambda: predictor.start_session(str(media.path), sid), refusal=BadValue, field="video_path"
            )
        except BaseException:
            self.sessions.pop(sid, None)
            raise
        returned = _get(info, "session_id", default=sid)
        if returned != sid:
            raise RuntimeError(f"the predictor named the session {returned!r}, expected {sid!r}")
        # The predictor decoded the frames: trust its numbers over the probe's.
        session.media = MediaInfo(
            media.path,
            int(_get(info, "num_frames", default=media.num_frames)),
            int(_get(info, "width", default=media.width)),
            int(_get(info, "height", default=media.height)),
            _get(info, "fps", default=media.fps),
        )
        session.ready = True
        session.touch()
        return session

    async def add_prompt(self, session_id: str, prompt: FramePrompt) -> dict:
        await self.evict_expired()
        session = self.get(session_id)
        media = session.media
        if prompt.frame_idx >= media.num_frames:
            raise BadValue(f"frame_idx: {prompt.frame_idx} is out of range; the video has {media.num_frames} frames")
        session.touch()
        predictor = await self.ensure_predictor()
        w, h = media.width, media.height
        # The predictor takes the wire units: pixel points, normalised cxcywh boxes.
        points = [list(p) for p in prompt.points] if prompt.points else None
        boxes = [b.to_list() for b in prompt.boxes] if prompt.boxes else None
        obj_id = prompt.obj_id if prompt.obj_id is not None else (1 if points else None)

        def run() -> Any:
            return predictor.add_prompt(
                session_id,
                frame_idx=prompt.frame_idx,
                text=prompt.text,
                points=points,
                labels=prompt.labels if points else None,
                boxes=boxes,
                obj_id=obj_id,
            )

        result = await self._call_predictor(run)
        session.touch()
        frame = await _encode_frames_off_loop([result], prompt.frame_idx, w, h)
        out = frame[0]
        out["num_objects"] = len(out["object_ids"])
        return out

    async def propagate(self, session_id: str, direction: str, start_frame: int | None, max_frames: int) -> list[dict]:
        await self.evict_expired()
        session = self.get(session_id)
        media = session.media
        if start_frame is not None and start_frame >= media.num_frames:
            raise BadValue(f"start_frame: {start_frame} is out of range; the video has {media.num_frames} frames")
        session.touch()
        predictor = await self.ensure_predictor()

        def run() -> list[Any]:
            return list(
                predictor.propagate_in_video(
                    session_id,
                    direction=direction,
                    start_frame=start_frame,
                    max_frames=None if max_frames < 0 else max_frames,
                )
            )

        results = await self._call_predictor(run, refusal=Conflict, field="session_id")
        session.touch()
        self.frames_propagated += len(results)
        frames = await _encode_frames_off_loop(results, None, media.width, media.height)
        by_index = {f["frame_idx"]: f for f in frames}  # "both" may yield the start frame twice
        return [by_index[i] for i in sorted(by_index)]

    async def _call_predictor(
        self, fn: Callable[[], Any], refusal: type[ServiceError] = BadValue, field: str = "prompt"
    ) -> Any:
        """Run a predictor call on the model thread. A ``ValueError`` it raises (a prompt it refuses, a
        video it cannot decode, a propagation before any prompt) becomes ``refusal`` (400 or 409) naming
        ``field``."""
        from sam3.inference.video_predictor import SessionNotFound

        try:
            return await self.models.call(fn)
        except SessionNotFound as exc:
            raise NotFound(f"session_id: the video predictor has no session {exc}") from None
        except ValueError as exc:
            raise refusal(f"{field}: {exc}") from None

    async def stop(self, session_id: str) -> bool:
        session = self.sessions.get(session_id)
        if session is None or not session.ready:
            return False
        return await self._close(session_id)


async def _encode_frames_off_loop(results: Iterable[Any], frame_idx: int | None, width: int, height: int) -> list[dict]:
    """PNG-encode frame results in a worker thread (not under the model lock; it is CPU work only)."""
    results = list(results)
    return await anyio.to_thread.run_sync(lambda: [frame_to_wire(r, frame_idx, width, height) for r in results])
