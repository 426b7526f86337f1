"""One propagation of a video session: one frame of work per :meth:`Propagation.step`.

Made by :meth:`sam3.inference.video_predictor.VideoPredictor.propagate`, which checks the arguments and plans the
passes; this object walks them, runs the engine frame by frame (a full detect-then-track pass, a re-track of the
clicked objects only, or a fetch of stored outputs) and holds back results while the hot-start rules may still
change them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from sam3.device import autocast_dtype_in_effect
from sam3.inference.association import CONFIRMATION_LOOKAHEAD
from sam3.inference.detect_track import FrameOutcome
from sam3.inference.multiplex_tracklets import MultiplexBatch
from sam3.inference.tracklets import TrackletBatch
from sam3.inference.video_state import Action, ActionKind, FrameResult, VideoSession

if TYPE_CHECKING:
    from sam3.inference.video_predictor import VideoPredictor


class Propagation:
    """One propagation, one frame of work per :meth:`step` (an iterator of :class:`FrameResult` too).

    ``total`` frames are visited in processing order; ``frames_done`` counts those stepped, ``next_frame`` and
    :meth:`upcoming` name what comes next (a caller decodes them ahead).
    A full detect-then-track pass holds results back for ``hotstart_delay`` frames (the hot-start rules may
    still remove a young object); :meth:`finish` releases what is held when a caller stops early, so every
    frame computed so far keeps its stored output.
    """

    def __init__(
        self,
        predictor: VideoPredictor,
        session: VideoSession,
        passes: list[tuple[bool, range]],
        requested_start: int | None,
    ):
        self.predictor = predictor
        self.session = session
        self.passes = passes
        self.requested_start = requested_start
        self._order = [t for _, frames in passes for t in frames]
        self._done = 0
        self._pass = -1
        self._pos = 0
        self._kind: ActionKind | None = None
        self._obj_ids: list[int] = []
        self._batches: list[TrackletBatch | MultiplexBatch] = []
        self._buffer: list[FrameOutcome] = []
        self._removed: set[int] = set()
        self._pending: list[FrameResult] = []
        self._stopped = False
        self._action: Action | None = None

    @property
    def total(self) -> int:
        """Frames this propagation visits (both passes of "both")."""
        return len(self._order)

    @property
    def frames_done(self) -> int:
        """Frames stepped so far (``total`` once finished or stopped)."""
        return self._done

    @property
    def finished(self) -> bool:
        return self._done >= self.total

    @property
    def stopped(self) -> bool:
        """True when :meth:`finish` ended it before its last frame."""
        return self._stopped

    @property
    def next_frame(self) -> int | None:
        return None if self.finished else self._order[self._done]

    def upcoming(self, count: int = 2) -> list[int]:
        """The next ``count`` frames to be stepped, in order (fewer near the end; none once finished): what a
        caller decodes ahead while the current frame computes."""
        return self._order[self._done : self._done + count]

    def __iter__(self) -> Iterator[FrameResult]:
        return self

    def __next__(self) -> FrameResult:
        while not self._pending:
            if self.finished:
                with self.predictor.lock:
                    self._drain()
                raise StopIteration
            self._pending = self.step()
        return self._pending.pop(0)

    def step(self) -> list[FrameResult]:
        """Process the next frame; returns the results that became ready (none, one, or the held-back ones)."""
        p = self.predictor
        with p.lock, torch.inference_mode():
            self.session.check_open()
            self.session.use_precision(autocast_dtype_in_effect(p.model.device))
            if self.finished:
                self._drain()
                return []
            reverse, frames = self._current_pass()
            t = frames[self._pos]
            last = self._pos == len(frames) - 1
            if self._kind == ActionKind.PROPAGATION_FULL:
                out = self._full_frame(t, reverse, last)
            elif self._kind == ActionKind.PROPAGATION_PARTIAL:
                out = [self._partial_frame(t, reverse)]
            else:
                s = self.session
                out = [p.engine.build_result(s, t, s.masks_on(t), set(s.objects.suppressed[t]))]
            p.engine.prune_memory(self.session, t)
            self._pos += 1
            self._done += 1
            if self.finished:
                self._drain()
            return out

    def finish(self) -> list[FrameResult]:
        """Stop here: store and return the results still held back (the propagation is then finished)."""
        with self.predictor.lock, torch.inference_mode():
            out = [self._emit(o) for o in self._buffer] if not self.session.closed else []
            self._buffer = []
            if not self.finished and self.session.actions and self.session.actions[-1] is self._action:
                # an interrupted pass does not count: the next propagation plans as if it had not been asked
                # for (otherwise the released planning would only fetch frames that were never computed)
                self.session.actions.pop()
            self._done = self.total
            self._stopped = True
            return out

    def _drain(self) -> None:
        """Begin the passes left with no frame (e.g. backward from frame 0): each still records its action."""
        while not self._stopped and self._pass + 1 < len(self.passes):
            self._pass += 1
            self._pos = 0
            self._begin_pass(self.passes[self._pass][0])

    # ---------------------------------------------------------------- passes
    def _current_pass(self) -> tuple[bool, range]:
        reverse, frames = self.passes[self._pass] if self._pass >= 0 else (None, range(0))
        if self._pass < 0 or self._pos >= len(frames):
            self._pass += 1
            self._pos = 0
            reverse, frames = self.passes[self._pass]
            self._begin_pass(reverse)
            while not len(frames):  # an empty pass (e.g. backward from frame 0)
                self._pass += 1
                reverse, frames = self.passes[self._pass]
                self._begin_pass(reverse)
        return reverse, frames

    def _begin_pass(self, reverse: bool) -> None:
        p, s = self.predictor, self.session
        kind, obj_ids = s.propagation_plan()
        # the start as requested (None = default): the next plan reads it, as released
        self._action = Action(kind, self.requested_start, obj_ids)
        s.actions.append(self._action)
        self._kind, self._obj_ids = kind, obj_ids or []
        self._buffer, self._removed = [], set()
        frames = self.passes[self._pass][1]
        if len(frames):
            s.anchor_frames.add(frames[0] + (1 if reverse else 0))
        if kind == ActionKind.PROPAGATION_PARTIAL:
            engine = p.engine
            self._batches = [b for b in s.batches if set(self._obj_ids) & set(b.obj_ids)]
            for b in self._batches:
                engine.runner.consolidate(b, lambda t: engine.frame_features(s, t).tracker)

    def _emit(self, o: FrameOutcome, reverse: bool = False) -> FrameResult:
        s, cfg = self.session, self.predictor.cfg
        hidden = set(o.suppressed)
        if cfg.hotstart_delay > 0 and cfg.masklet_confirmation_enable:
            # SAM 3.1: removed objects stay on earlier frames; objects not confirmed a few frames later are hidden
            ahead = o.frame_idx + (-CONFIRMATION_LOOKAHEAD if reverse else CONFIRMATION_LOOKAHEAD)
            hidden |= s.objects.hotstart.unconfirmed.get(min(max(ahead, 0), s.num_frames - 1), set())
        elif cfg.hotstart_delay > 0:
            hidden |= self._removed
        return self.predictor.engine.build_result(s, o.frame_idx, o.masks, hidden, store=True, scores=o.scores)

    def _full_frame(self, t: int, reverse: bool, last: bool) -> list[FrameResult]:
        out = self.predictor.engine.run_frame(self.session, t, reverse)
        cfg = self.predictor.cfg
        delay = cfg.hotstart_delay
        if delay <= 0:
            return [self._emit(out, reverse)]
        # hold frames back so that objects removed by the hot-start rules never show up (SAM 3.1: until the
        # confirmation of the objects is known a few frames later)
        self._buffer.append(out)
        self._removed |= out.removed
        if cfg.masklet_confirmation_enable:
            delay = max(delay, CONFIRMATION_LOOKAHEAD + 1)
        if last:
            ready, self._buffer = self._buffer, []
        elif len(self._buffer) >= delay:
            ready, self._buffer = self._buffer[:1], self._buffer[1:]
        else:
            ready = []
        return [self._emit(o, reverse) for o in ready]

    def _partial_frame(self, t: int, reverse: bool) -> FrameResult:
        """Re-track only the clicked objects and merge them into the stored results."""
        s, engine = self.session, self.predictor.engine
        h, w = s.video_hw
        tracked = engine.track_objects(s, t, reverse, self._batches, self._obj_ids)
        masks = s.masks_on(t)
        if tracked:
            for i, (_, score) in tracked.items():
                # as released, the partial pass records the raw object-score logit (not its sigmoid)
                s.objects.tracker_score[t][i] = score
            low = torch.stack([low for low, _ in tracked.values()])[:, None]
            video = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False) > 0
            masks.update(zip(tracked, video.unbind(0)))
        return engine.build_result(s, t, masks, set(s.objects.suppressed[t]), store=True)
