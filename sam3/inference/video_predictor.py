"""Video tracking sessions: open a video, prompt it (text, a box, clicks), propagate in either direction.

``Sam3VideoPredictor`` wraps a :class:`Sam3Model` that has a tracker (the same weights the image
processor uses: no second copy). Sessions are typed (:class:`VideoSession`); per-frame work is done by
:class:`DetectTrackEngine`. The public calls mirror the official request API:

    start_session(resource_path, session_id=None) -> SessionInfo
    add_prompt(session_id, frame_idx, text=None, points=None, labels=None, boxes=None, obj_id=None) -> FrameResult
    propagate_in_video(session_id, direction="both", start_frame=None, max_frames=None) -> Iterator[FrameResult]
    remove_object / reset_session / close_session

Coordinates: points are pixels (x, y) of the video frame; boxes are normalised (cx, cy, w, h).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sam3.device import empty_cache
from sam3.inference.association import TrackingHeuristics
from sam3.inference.detect_track import VISUAL_TEXT, DetectTrackEngine, FrameOutcome
from sam3.inference.tracklets import TrackletBatch
from sam3.inference.video_io import load_video_frames
from sam3.inference.video_state import Action, FrameResult, VideoSession
from sam3.modeling.outputs import GeometricPrompt
from sam3.modeling.sam3_model import Sam3Model
from sam3.ops.masks import fill_holes_in_mask_scores


class SessionNotFound(KeyError):
    """No open session has this id."""


class SessionExists(ValueError):
    """A session with this id is already open."""


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    num_frames: int
    width: int
    height: int
    fps: float | None


class Sam3VideoPredictor:
    """Detect-then-track video predictor with sessions (thread-safe: one call at a time per predictor)."""

    def __init__(self, model: Sam3Model, heuristics: TrackingHeuristics | None = None):
        self.model = model.eval()
        self.engine = DetectTrackEngine(model, heuristics)
        self.cfg = self.engine.cfg
        self.sessions: dict[str, VideoSession] = {}
        self.lock = threading.RLock()

    # ---------------------------------------------------------------- sessions
    def start_session(self, resource_path: str, session_id: str | None = None) -> SessionInfo:
        with self.lock:
            if session_id is not None and session_id in self.sessions:
                raise SessionExists(f"session {session_id!r} already exists")
        cfg = self.model.config
        video = load_video_frames(resource_path, cfg.image_size, cfg.image_mean, cfg.image_std)
        with self.lock:
            sid = session_id or uuid.uuid4().hex
            if sid in self.sessions:
                raise SessionExists(f"session {sid!r} already exists")
            self.sessions[sid] = VideoSession(session_id=sid, resource_path=str(resource_path), video=video)
        return SessionInfo(sid, video.num_frames, video.width, video.height, video.fps)

    def session(self, session_id: str) -> VideoSession:
        s = self.sessions.get(session_id)
        if s is None:
            raise SessionNotFound(session_id)
        s.last_used = time.monotonic()
        return s

    def reset_session(self, session_id: str) -> None:
        with self.lock:
            self.session(session_id).reset()

    def close_session(self, session_id: str) -> bool:
        """Free everything the session holds; False when no such session was open."""
        with self.lock:
            s = self.sessions.pop(session_id, None)
            if s is None:
                return False
            s.close()
        empty_cache(self.model.device)
        return True

    # ---------------------------------------------------------------- prompts
    @torch.inference_mode()
    def add_prompt(
        self,
        session_id: str,
        frame_idx: int,
        text: str | None = None,
        points=None,
        labels=None,
        boxes=None,
        obj_id: int | None = None,
    ) -> FrameResult:
        with self.lock:
            s = self.session(session_id)
            if not 0 <= frame_idx < s.num_frames:
                raise ValueError(f"frame_idx {frame_idx} is outside the video (0..{s.num_frames - 1})")
            if points is not None and len(points) > 0:
                if text is not None or boxes is not None:
                    raise ValueError("send points in their own prompt (not together with text or boxes)")
                return self._add_points(s, frame_idx, points, labels, 1 if obj_id is None else obj_id)
            if text is None and not boxes:
                raise ValueError("a prompt needs text, points or a box")
            return self._add_concept(s, frame_idx, text, boxes)

    def _add_concept(self, s: VideoSession, frame_idx: int, text: str | None, boxes) -> FrameResult:
        """A text and/or box prompt: a new concept for the whole video (the session starts over)."""
        s.reset()
        s.text = text if text is not None and text != VISUAL_TEXT else None
        if boxes:
            b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            if b.shape[0] != 1:
                raise ValueError("a box prompt takes exactly one box (the visual exemplar)")
            if (b < 0).any() or (b > 1).any():
                raise ValueError("boxes must be normalised [cx, cy, w, h] in 0..1")
            device = self.model.device
            s.visual_prompt[frame_idx] = GeometricPrompt.from_boxes(b[None].to(device), torch.ones(1, 1, dtype=torch.long, device=device))
        outcome = self.engine.run_frame(s, frame_idx, reverse=False)
        s.cached_masks[frame_idx] = dict(outcome.masks)
        return self.engine.build_result(s, frame_idx, outcome.masks, hidden=set())

    def _add_points(self, s: VideoSession, frame_idx: int, points, labels, obj_id: int) -> FrameResult:
        eng, reg = self.engine, s.objects
        h, w = s.video_hw
        pts = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 2)
        lab = torch.ones(pts.shape[0], dtype=torch.int32) if labels is None else torch.as_tensor(labels, dtype=torch.int32).reshape(-1)
        if lab.shape[0] != pts.shape[0]:
            raise ValueError(f"{pts.shape[0]} points but {lab.shape[0]} labels")
        coords = pts / torch.tensor([w, h]) * self.model.config.image_size
        eng.visit_frame(s, frame_idx, reverse=False)  # the released code runs the detector here too
        feats = eng.frame_features(s, frame_idx)

        batch = next((b for b in s.batches if obj_id in b.obj_ids), None)
        if batch is None:
            batch = TrackletBatch(num_frames=s.num_frames, video_hw=s.video_hw)
            s.batches.append(batch)
            reg.obj_ids.append(obj_id)
            reg.max_obj_id = max(reg.max_obj_id, obj_id)
            s.actions.append(Action("add", frame_idx, [obj_id]))
        else:
            s.actions.append(Action("refine", frame_idx, [obj_id]))
        reg.score[obj_id] = 1.0
        reg.tracker_score[frame_idx][obj_id] = 1.0
        reg.hotstart.removed.discard(obj_id)
        for frames in reg.suppressed.values():
            frames.discard(obj_id)

        low = eng.runner.add_points(batch, frame_idx, obj_id, coords, lab, feats.tracker, use_prev_mem_frame=False)
        video = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        video = fill_holes_in_mask_scores(video, self.cfg.fill_hole_area)
        eng.runner.consolidate(batch, lambda t: eng.frame_features(s, t).tracker)
        # detector-made conditioning frames near a click would pull the object back: drop them
        window = self.cfg.refinement_cond_frame_removal_window
        for t in list(batch.mask_inputs.get(obj_id, {})):
            if t not in batch.point_inputs[obj_id] and abs(t - frame_idx) <= window:
                eng.runner.clear_prompts_on_frame(batch, t)

        masks = dict(s.cached_masks.get(frame_idx, {}))
        masks[obj_id] = video[0] > 0
        hidden = reg.suppressed[frame_idx]
        s.cached_masks[frame_idx] = {i: m for i, m in masks.items() if i not in hidden}
        return eng.build_result(s, frame_idx, masks, hidden=set(hidden))

    @torch.inference_mode()
    def remove_object(self, session_id: str, obj_id: int) -> bool:
        with self.lock:
            s = self.session(session_id)
            if obj_id not in s.objects.obj_ids:
                return False
            self.engine.remove_objects(s, [obj_id])
            s.objects.obj_ids.remove(obj_id)
            s.objects.score.pop(obj_id, None)
            for frame in s.cached_masks.values():
                frame.pop(obj_id, None)
            s.actions.append(Action("remove", None, [obj_id]))
            return True

    # ---------------------------------------------------------------- propagation
    def propagate_in_video(
        self,
        session_id: str,
        direction: str = "both",
        start_frame: int | None = None,
        max_frames: int | None = None,
    ) -> Iterator[FrameResult]:
        """Per-frame results: forward first, then backward for "both" (backward excludes the start).

        ``start_frame`` None starts at the earliest frame with outputs. Bad arguments raise here, before
        the first frame is processed.
        """
        if direction not in ("forward", "backward", "both"):
            raise ValueError(f"direction must be forward, backward or both, not {direction!r}")
        if max_frames is not None and max_frames < 0:
            max_frames = None
        with self.lock:
            s = self.session(session_id)
            if start_frame is not None and not 0 <= start_frame < s.num_frames:
                raise ValueError(f"start_frame {start_frame} is outside the video (0..{s.num_frames - 1})")
            if start_frame is None:
                self._start_frame(s)  # raises when nothing was prompted yet
        passes = {"forward": [False], "backward": [True], "both": [False, True]}[direction]
        return (r for reverse in passes for r in self._propagate(s, start_frame, max_frames, reverse))

    def _start_frame(self, s: VideoSession) -> int:
        """The default start: the earliest frame with outputs (a clicked frame when nothing ran yet)."""
        frames = s.frames_with_outputs or {t for b in s.batches for per in b.point_inputs.values() for t in per}
        if not frames:
            raise ValueError("add a prompt before propagating")
        return min(frames)

    def _order(self, s: VideoSession, start: int, max_frames: int | None, reverse: bool) -> range:
        n = s.num_frames if max_frames is None else max_frames
        if reverse:
            end = max(start - n, 0)
            return range(start - 1, end - 1, -1)
        end = min(start + n, s.num_frames - 1)
        return range(start, end + 1)

    def _plan(self, s: VideoSession) -> tuple[str, list[int] | None]:
        """What a propagation must recompute, from the actions since the last one."""
        if not s.actions:
            return "propagation_full", None
        last = s.actions[-1]
        if last.kind.startswith("propagation"):
            if last.kind == "propagation_fetch":
                return "propagation_fetch", None
            twice = len(s.actions) > 1 and s.actions[-2].kind in ("propagation_partial", "propagation_full")
            if twice or last.frame_idx in (0, s.num_frames - 1):
                return "propagation_fetch", None
            return last.kind, last.obj_ids
        ids: list[int] = []
        for a in reversed(s.actions):
            if a.kind.startswith("propagation"):
                break
            if a.kind in ("add", "refine"):
                ids.extend(a.obj_ids or [])
        return ("propagation_partial", sorted(set(ids))) if ids else ("propagation_fetch", None)

    def _propagate(self, s: VideoSession, start: int | None, max_frames: int | None, reverse: bool) -> Iterator[FrameResult]:
        with self.lock, torch.inference_mode():
            order = self._order(s, self._start_frame(s) if start is None else start, max_frames, reverse)
            kind, obj_ids = self._plan(s)
            # the start as requested (None = default): the next plan reads it, as released
            s.actions.append(Action(kind, start, obj_ids))
        if kind == "propagation_full":
            yield from self._propagate_full(s, order, reverse)
        elif kind == "propagation_partial":
            yield from self._propagate_partial(s, order, reverse, obj_ids or [])
        else:
            for t in order:
                with self.lock:
                    hidden = s.objects.suppressed[t]
                    yield self.engine.build_result(s, t, dict(s.cached_masks.get(t, {})), set(hidden))

    def _propagate_full(self, s: VideoSession, order: range, reverse: bool) -> Iterator[FrameResult]:
        buffer: list[FrameOutcome] = []
        removed: set[int] = set()
        last = order[-1] if len(order) else None
        for t in order:
            with self.lock, torch.inference_mode():
                out = self.engine.run_frame(s, t, reverse)
                if self.cfg.hotstart_delay <= 0:
                    ready = [out]
                else:
                    # hold frames back so that objects removed by the hot-start rules never show up
                    buffer.append(out)
                    removed |= out.removed
                    if t == last:
                        ready, buffer = buffer, []
                    elif len(buffer) >= self.cfg.hotstart_delay:
                        ready, buffer = buffer[:1], buffer[1:]
                    else:
                        ready = []
                results = []
                for o in ready:
                    hidden = set(o.suppressed) | (removed if self.cfg.hotstart_delay > 0 else set())
                    s.cached_masks[o.frame_idx] = {i: m for i, m in o.masks.items() if i not in hidden}
                    results.append(self.engine.build_result(s, o.frame_idx, o.masks, hidden))
            yield from results

    def _propagate_partial(self, s: VideoSession, order: range, reverse: bool, obj_ids: list[int]) -> Iterator[FrameResult]:
        """Re-track only the clicked objects and merge them into the cached results."""
        eng = self.engine
        h, w = s.video_hw
        with self.lock, torch.inference_mode():
            batches = [b for b in s.batches if set(obj_ids) & set(b.obj_ids)]
            for b in batches:
                eng.runner.consolidate(b, lambda t: eng.frame_features(s, t).tracker)
        for t in order:
            with self.lock, torch.inference_mode():
                refined = {}
                for i, (low, score) in eng.track_objects(s, t, reverse, batches, obj_ids).items():
                    # as released, the partial pass records the raw object-score logit (not its sigmoid)
                    s.objects.tracker_score[t][i] = score
                    refined[i] = F.interpolate(low[None, None], size=(h, w), mode="bilinear", align_corners=False)[0] > 0
                masks = dict(s.cached_masks.get(t, {}))
                masks.update(refined)
                hidden = s.objects.suppressed[t]
                s.cached_masks[t] = {i: m for i, m in masks.items() if i not in hidden}
                result = eng.build_result(s, t, masks, set(hidden))
            yield result
