"""Video tracking sessions behind ``/track/*``: the one table of typed sessions, its cap and idle expiry,
per-frame propagation with cancel, and the lazily built video predictor.

The predictor is built on the first ``/track`` call that needs it, from the already loaded image model (the
same weights; no second copy). Every model step goes through ``ModelService.call`` (the model lock), and a
propagation takes it frame by frame, so image requests and other sessions interleave between frames.
Opening a video and decoding the next frames run in worker threads outside the model lock.

The session table lives on the event loop (only async code touches it). A session in use (a request
working on it, a propagation running) is never idle; closing it (``/track/stop``, expiry, shutdown) removes
it from the table and frees it in one synchronous step that cannot be refused; when a request is still
using it, that request frees it as it ends. Admission to the table (the cap, the id's uniqueness, the
reserved slot) is one synchronous step too, before any slow work. A cancel or stop also wakes a streamed
propagation that waits for its reader (``Session.cancelled``, ``server.stream_sender``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from server.errors import (
    BadValue,
    Conflict,
    NotFound,
    ServiceError,
    TooBusy,
    Unavailable,
)
from server.heap import trim_heap
from server.mask_codec import MaskFormat
from server.services.frame_previews import FramePreviews
from server.services.video_sessions import (
    FramePrompt,
    Session,
    frame_to_wire,
    frames_to_wire,
    video_error,
    video_limits,
)
from server.services.model_service import ModelService, describe_error
from server.settings import Settings

if TYPE_CHECKING:
    from sam3.inference.propagation import Propagation
    from sam3.inference.video_predictor import VideoPredictor
    from sam3.inference.video_state import FrameResult

log = logging.getLogger("sam3.server")
T = TypeVar("T")
# A propagation gives the freed heap back to the OS every this many frames (server.heap).
TRIM_EVERY_FRAMES = 25


DECODE_AHEAD_THREAD = "sam-decode-ahead"


def _decode_ahead(predictor: VideoPredictor, video, frame_idx: int) -> None:
    """Decode one frame into the session's frame cache; a failure is left for the frame's own decode to report
    (it runs again before that frame's step and raises the video error there)."""
    try:
        predictor.prefetch(video, [frame_idx])
    except Exception:  # noqa: BLE001 -- reported by the step's own decode of this frame
        log.debug("decode-ahead of frame %d failed; its own decode will report it", frame_idx, exc_info=True)


def _to_wire(results: list[FrameResult], mask_format: MaskFormat) -> list[dict]:
    return [frame_to_wire(r, mask_format) for r in results]


class TrackingService:
    """Sessions of the video predictor, with a cap, idle expiry and a lazily built predictor."""

    def __init__(self, settings: Settings, models: ModelService):
        self.settings = settings
        self.models = models
        self.predictor: VideoPredictor | None = None
        self.predictor_error: str | None = None
        self.sessions: dict[str, Session] = {}
        self.frames_propagated = 0  # frames processed by propagations since start (for /metrics)
        # called with (session_id, resource_path) when a session is freed (the upload store's retention clock)
        self.on_free: list[Callable[[str, str], None]] = []
        self.previews = FramePreviews(settings, models)  # GET /media/frame
        # frames decoded ahead while the model computes the current one (one thread for every session)
        self._ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix=DECODE_AHEAD_THREAD)
        # frame results encoded for the wire while the model computes the next frame
        self._encoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sam-encode")

    # ------------------------------------------------------------------ predictor
    @property
    def predictor_loaded(self) -> bool:
        return self.predictor is not None

    async def ensure_predictor(self) -> VideoPredictor:
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
            from sam3.inference.video_predictor import VideoPredictor

            s = self.settings
            limits = video_limits(s)
            # the same Sam3Model (or Sam31Model: the multiplexed tracker) object as the image processor: one copy of the weights
            # a compiled frame step wants its objects padded to buckets (the shapes the warm-up compiled) on every device
            self.predictor = VideoPredictor(
                self.models.model,
                memory_frames=s.video_memory_frames,
                limits=limits,
                bucket_objects=True if s.compile else None,
            )
            self.predictor_error = None
            log.info("video predictor ready (sharing the image model's weights)")
        except Exception as exc:  # noqa: BLE001 -- missing module, incompatible model, out of memory...
            self.predictor_error = describe_error(exc)
            log.error("video predictor not available: %s", self.predictor_error)

    # ------------------------------------------------------------------ session table
    def _retry_after_s(self) -> float:
        now, s_ = time.monotonic(), self.settings
        remaining = [
            s.expires_in(s_.session_ttl_s, s_.session_heartbeat_s, now) for s in self.sessions.values() if not s.users
        ]
        return max(1.0, min(remaining, default=1.0))

    def get(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise NotFound(f"session_id: unknown or expired session {session_id!r} (start one with /track/start)")
        if not session.ready:
            raise Conflict(f"session_id: session {session_id!r} is still starting")
        return session

    @asynccontextmanager
    async def use(self, session_id: str, exclusive: bool = True) -> AsyncIterator[Session]:
        """Hold a session for one request: it cannot expire meanwhile, and a close waits for the request.

        ``exclusive`` requests (prompts, propagation, remove, reset) are refused while a propagation runs.
        """
        self._evict_now()
        session = self.get(session_id)
        if exclusive and session.propagation is not None:
            raise Conflict(
                f"session_id: a propagation is running on session {session_id!r}; "
                "wait for it or stop it with /track/cancel"
            )
        session.users += 1
        try:
            yield session
        finally:
            session.users -= 1
            session.touch()
            if session.closing and session.users == 0:
                self._free(session)

    async def evict_expired(self) -> list[str]:
        """Close every session idle (not in use) for longer than ``SAM_SESSION_TTL_S`` (the idle sweep)."""
        return self._evict_now()

    def _evict_now(self) -> list[str]:
        now = time.monotonic()
        ttl, heartbeat = self.settings.session_ttl_s, self.settings.session_heartbeat_s
        expired = [
            sid for sid, s in self.sessions.items() if s.ready and not s.users and s.expires_in(ttl, heartbeat, now) < 0
        ]
        for sid in expired:
            s = self.sessions[sid]
            if s.heartbeat_at is not None and now - s.heartbeat_at > heartbeat:
                log.info("session %s closed: no heartbeat from its page for %.0f s", sid, now - s.heartbeat_at)
            else:
                log.info("session %s expired after %.0f s idle", sid, now - s.last_used)
            self._close(sid)
        return expired

    def _close(self, session_id: str) -> bool:
        """Remove a session from the table and free it, in one step (no await: it cannot half-happen)."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        session.request_cancel()
        if session.users:
            session.closing = True  # the request using it frees it when it ends
        else:
            self._free(session)
        return True

    def _free(self, session: Session) -> None:
        if session.video is not None:
            for hook in self.on_free:
                hook(session.session_id, session.video.resource_path)
        if session.video is not None and self.predictor is not None:
            try:
                self.predictor.close_session(session.video)
            except Exception as exc:  # noqa: BLE001 -- freeing must not fail the caller
                log.warning("close_session(%s) failed: %s", session.session_id, describe_error(exc))
        if session.video is not None:
            log.info("session %s closed: its memory is freed", session.session_id)
        session.video = None
        trim_heap()

    async def close_all(self) -> None:
        for sid in list(self.sessions):
            self._close(sid)
        self.previews.close()
        self._ahead.shutdown(wait=False, cancel_futures=True)
        self._encoder.shutdown(wait=False, cancel_futures=True)

    async def _model_step(self, fn: Callable[[], T]) -> T:
        """One unit of model work under the model lock; a full queue is waited out (a propagation in progress
        must not fail because other requests are queued)."""
        while True:
            try:
                return await self.models.call(fn)
            except TooBusy:
                await anyio.sleep(0.05)

    async def _predictor_call(
        self, fn: Callable[[], T], refusal: type[ServiceError] = BadValue, field: str = "prompt", step: bool = False
    ) -> T:
        """Run a predictor call on the model thread; a ``ValueError`` it raises becomes ``refusal`` naming
        ``field`` (a video read error becomes the matching ``video_path`` error)."""
        from sam3.inference.media_paths import VideoReadError

        try:
            return await (self._model_step(fn) if step else self.models.call(fn))
        except VideoReadError as exc:
            raise video_error(exc) from None
        except ValueError as exc:
            raise refusal(f"{field}: {exc}") from None

    # ------------------------------------------------------------------ requests
    def _admit(self, session_id: str | None) -> Session:
        """Admission, in one synchronous step (no await, so no other request runs in between): the id's
        uniqueness and the session cap are checked and the slot is reserved together, before any slow work.
        Concurrent starts can therefore never pass the cap, and a duplicate id is a 409 however they interleave."""
        if session_id is not None and session_id in self.sessions:
            raise Conflict(f"session_id: a session named {session_id!r} already exists")
        if len(self.sessions) >= self.settings.max_sessions:
            raise TooBusy(
                f"session_id: {len(self.sessions)} tracking sessions are open, the limit is "
                f"{self.settings.max_sessions} (SAM_MAX_SESSIONS); stop one with /track/stop or retry later",
                retry_after_s=self._retry_after_s(),
            )
        session = Session(session_id or uuid.uuid4().hex)
        self.sessions[session.session_id] = session  # reserved: video None until it is open
        return session

    async def start(self, video_path: str, session_id: str | None) -> Session:
        self._evict_now()
        session = self._admit(session_id)
        sid = session.session_id
        from sam3.inference.media_paths import VideoReadError, resolve_media_path

        roots = self.settings.media_root_paths
        try:
            try:  # the roots first: a path outside them is 403 whatever the model's state (the loader checks again)
                await anyio.to_thread.run_sync(resolve_media_path, video_path, roots)
            except VideoReadError as exc:
                raise video_error(exc) from None
            self.models.require_loaded()
            predictor = await self.ensure_predictor()
            try:
                # checks and the first frame, in a worker thread: not under the model lock
                video = await anyio.to_thread.run_sync(lambda: predictor.start_session(video_path, sid, roots=roots))
            except VideoReadError as exc:
                raise video_error(exc) from None
        except BaseException:
            if self.sessions.get(sid) is session:  # a failed start frees its slot (and only its own)
                del self.sessions[sid]
            raise
        if self.sessions.get(sid) is not session:  # closed while opening (shutdown)
            predictor.close_session(video)
            raise NotFound(f"session_id: session {sid!r} was closed while it was starting")
        session.video = video
        session.touch()
        return session

    async def add_prompt(self, session_id: str, prompt: FramePrompt, mask_format: MaskFormat) -> dict:
        async with self.use(session_id) as session:
            video = session.video
            if prompt.frame_idx >= video.num_frames:
                raise BadValue(
                    f"frame_idx: {prompt.frame_idx} is out of range; the video has {video.num_frames} frames"
                )
            predictor = await self.ensure_predictor()
            await self._decode(lambda: predictor.prefetch(video, [prompt.frame_idx, prompt.frame_idx + 1]))
            points = [list(p) for p in prompt.points] if prompt.points else None
            boxes = [b.to_list() for b in prompt.boxes] if prompt.boxes else None
            result = await self._predictor_call(
                lambda: predictor.add_prompt(
                    video,
                    prompt.frame_idx,
                    text=prompt.text,
                    points=points,
                    labels=prompt.labels if points else None,
                    boxes=boxes,
                    box_labels=prompt.box_labels if boxes else None,
                    obj_id=prompt.obj_id,
                )
            )
            (out,) = await frames_to_wire([result], mask_format)
            out["num_objects"] = len(out["object_ids"])
            return out

    async def begin_propagation(
        self, session_id: str, direction: str, start_frame: int | None, max_frames: int
    ) -> tuple[Session, Propagation]:
        """Check the arguments and plan the frames (errors here are ordinary 4xx answers). Nothing in the
        session changes until :meth:`run_propagation` takes the first step."""
        async with self.use(session_id) as session:
            video = session.video
            if start_frame is not None and start_frame >= video.num_frames:
                raise BadValue(f"start_frame: {start_frame} is out of range; the video has {video.num_frames} frames")
            predictor = await self.ensure_predictor()
            prop = await self._predictor_call(
                lambda: predictor.propagate(video, direction, start_frame, None if max_frames < 0 else max_frames),
                refusal=Conflict,
                field="session_id",
            )
            return session, prop

    async def run_propagation(
        self, session: Session, prop: Propagation, mask_format: MaskFormat
    ) -> AsyncIterator[dict]:
        """Run a planned propagation frame by frame, yielding each encoded frame as soon as it exists.

        The model lock is taken per frame; the frame (and the detector's look-ahead frame) is decoded before
        taking it, and the frame after those is decoded on the decode-ahead thread while the model computes (so
        the next step finds its frames decoded); a step's results are encoded for the wire while the next step
        computes, so each frame is yielded one step after it was computed (and before an error of the next step
        ends the stream). On cancel (``/track/cancel``, ``/track/stop``, a disconnect) the frames computed so
        far stay stored, and ``prop.stopped`` is true.
        """
        if self.sessions.get(session.session_id) is not session or not session.ready:
            raise NotFound(f"session_id: session {session.session_id!r} was closed")
        if session.propagation is not None:
            raise Conflict(f"session_id: a propagation is already running on session {session.session_id!r}")
        session.propagation, session.cancel = prop, False
        session.users += 1
        previous: list[FrameResult] = []  # the last step's results, encoded while the next step computes
        try:
            video, predictor = session.video, await self.ensure_predictor()
            while not prop.finished:
                if session.cancel:
                    previous += await self._finish(prop)
                    break
                frames = prop.upcoming(3)
                # this frame and the next, off the model's thread (decoded ahead by the last step, as a rule)
                await self._decode(lambda now=frames[:2]: predictor.prefetch(video, now))
                if len(frames) == 3:
                    self._ahead.submit(_decode_ahead, predictor, video, frames[2])
                try:
                    results, encoded = await self._step_while_encoding(prop, previous, mask_format)
                except ServiceError:  # the frames computed before it still reach the reader, then the error
                    for frame in await frames_to_wire(previous, mask_format):
                        yield frame
                    raise
                previous = results
                self.frames_propagated += 1
                if prop.frames_done % TRIM_EVERY_FRAMES == 0:
                    await anyio.to_thread.run_sync(trim_heap)
                for frame in encoded:
                    yield frame
            for frame in await frames_to_wire(previous, mask_format):
                yield frame
        finally:
            with anyio.CancelScope(shield=True):  # a disconnect or an error: keep what was computed
                if not prop.finished:
                    await self._finish(prop)
                self._end_propagation(session)

    async def _step_while_encoding(
        self, prop: Propagation, previous: list[FrameResult], mask_format: MaskFormat
    ) -> tuple[list[FrameResult], list[dict]]:
        """One model step of ``prop`` while a worker thread encodes the ``previous`` step's results for the wire
        (a frame is sent one step later, and its encoding no longer adds to the time per frame).
        -> (this step's results, the previous results encoded)."""
        pending = self._encoder.submit(_to_wire, previous, mask_format) if previous else None
        results = await self._predictor_call(prop.step, refusal=Conflict, field="session_id", step=True)
        encoded = [] if pending is None else await anyio.to_thread.run_sync(pending.result)
        return results, encoded

    async def _decode(self, fn: Callable[[], Any]) -> None:
        from sam3.inference.media_paths import VideoReadError

        try:
            await anyio.to_thread.run_sync(fn)
        except VideoReadError as exc:
            raise video_error(exc) from None

    async def _finish(self, prop: Propagation) -> list[FrameResult]:
        if prop.session.closed:
            return []
        return await anyio.to_thread.run_sync(prop.finish)

    def _end_propagation(self, session: Session) -> None:
        session.propagation = None
        session.cancel = False
        session.cancelled = anyio.Event()
        session.users -= 1
        session.touch()
        if session.closing and session.users == 0:
            self._free(session)

    def cancel(self, session_id: str) -> bool:
        session = self.get(session_id)
        if session.propagation is None:
            return False
        session.request_cancel()
        return True

    async def frames(self, session_id: str, start: int, end: int | None, mask_format: MaskFormat) -> list[dict]:
        """Stored results of the computed frames in ``start..end`` (inclusive), in frame order."""
        async with self.use(session_id, exclusive=False) as session:
            video = session.video
            last = video.num_frames - 1 if end is None else end
            if start >= video.num_frames:
                raise BadValue(f"start: {start} is out of range; the video has {video.num_frames} frames")
            if last < start:
                raise BadValue(f"end: {end} is before start {start}")
            last = min(last, video.num_frames - 1)
            predictor = await self.ensure_predictor()

            def read() -> list[dict]:
                out = []
                for t in predictor.computed_frames(
                    video, start, last
                ):  # one full-size frame result at a time: encoded, then dropped
                    result = predictor.frame_result(video, t)
                    if result is not None:
                        out.append(frame_to_wire(result, mask_format))
                return out

            return await anyio.to_thread.run_sync(read)

    async def remove_object(self, session_id: str, obj_id: int) -> bool:
        async with self.use(session_id) as session:
            predictor = await self.ensure_predictor()
            return await self._predictor_call(lambda: predictor.remove_object(session.video, obj_id), field="obj_id")

    async def reset(self, session_id: str) -> None:
        async with self.use(session_id) as session:
            predictor = await self.ensure_predictor()
            await self._predictor_call(lambda: predictor.reset_session(session.video), field="session_id")

    async def stop(self, session_id: str) -> bool:
        session = self.sessions.get(session_id)
        if session is None or not session.ready:
            return False
        return self._close(session_id)
