"""Video tracking sessions: open a video, prompt it (text, a box, clicks), propagate in either direction.

``VideoPredictor`` wraps a :class:`Sam3Model` that has a tracker (the same weights the image
processor uses: no second copy). Sessions are typed (:class:`VideoSession`) and passed to every call;
the predictor keeps no table of them (its caller does). Per-frame work is done by :class:`DetectTrackEngine`.

    start_session(resource_path, session_id=None, limits=None, roots=None) -> VideoSession
    add_prompt(session, frame_idx, text=None, points=None, labels=None, boxes=None, box_labels=None,
               obj_id=None) -> FrameResult
    propagate(session, direction="both", start_frame=None, max_frames=None) -> Propagation
        (an iterator of FrameResult; each ``step()`` is one frame of work, so a caller can take a lock per
        frame and stop between frames)
    frame_result(session, frame_idx) -> FrameResult | None   (stored output, nothing recomputed)
    remove_object(session, obj_id) -> bool ; reset_session(session) ; close_session(session)

Coordinates: points are pixels (x, y) of the video frame; boxes are normalised (cx, cy, w, h).

Memory: frames are decoded on demand (``VideoLimits.cache_mb`` of model-ready frames), outputs are kept
run-length encoded, and the memory bank keeps ``memory_frames`` frames around the current one, the
prompted frames and the propagation starts (``MemoryBank.prune`` says when that can change a result).
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import torch
import torch.nn.functional as F

from sam3.device import autocast_dtype_in_effect, empty_cache, pins_host_memory, upload
from sam3.inference.association import TrackingHeuristics
from sam3.inference.detect_track import VISUAL_TEXT, DetectTrackEngine
from sam3.inference.propagation import Propagation
from sam3.inference.video_io import VideoLimits, open_video
from sam3.inference.video_state import Action, ActionKind, FrameResult, VideoSession
from sam3.modeling.outputs import GeometricPrompt
from sam3.modeling.sam3_model import Sam3Model
from sam3.ops.masks import fill_holes_in_mask_scores

# Non-conditioning memories kept around the current frame, the prompted frames and the propagation starts.
DEFAULT_MEMORY_FRAMES = 64
DIRECTIONS = {"forward": (False,), "backward": (True,), "both": (False, True)}


class VideoPredictor:
    """Detect-then-track video predictor (thread-safe: one frame of work at a time per predictor)."""

    def __init__(
        self,
        model: Sam3Model,
        heuristics: TrackingHeuristics | None = None,
        memory_frames: int = DEFAULT_MEMORY_FRAMES,
        limits: VideoLimits | None = None,
        bucket_objects: bool | None = None,
    ):
        self.model = model.eval()
        # Every tracked object of a frame goes through the tracker together. Padding their count to 1, 2, 4,
        # 8, ... keeps the shapes few for compiled or graph-captured steps on an accelerator; on a CPU it only
        # adds work, so None pads everywhere but on the CPU (both give the same results: test_batched_tracking).
        if bucket_objects is None:
            bucket_objects = model.device.type != "cpu"
        self.engine = DetectTrackEngine(model, heuristics, memory_frames, bucket_objects)
        self.cfg = self.engine.cfg
        self.limits = limits or VideoLimits()
        self.lock = threading.RLock()

    # ---------------------------------------------------------------- sessions
    def start_session(
        self,
        resource_path: str | Path,
        session_id: str | None = None,
        limits: VideoLimits | None = None,
        roots: tuple[Path, ...] | None = None,
    ) -> VideoSession:
        """Open a video file or frame folder (checked, first frame read; nothing else decoded yet)."""
        cfg = self.model.config
        pin = pins_host_memory(self.model.device)  # frames decoded into pinned memory for non-blocking uploads
        video = open_video(
            resource_path, cfg.image_size, cfg.image_mean, cfg.image_std, limits or self.limits, roots, pin
        )
        return VideoSession(session_id=session_id or uuid.uuid4().hex, resource_path=str(resource_path), video=video)

    def reset_session(self, session: VideoSession) -> None:
        with self.lock:
            session.check_open()
            session.reset()

    def close_session(self, session: VideoSession) -> None:
        """Free everything the session holds (idempotent)."""
        with self.lock:
            if session.closed:
                return
            session.close()
        empty_cache(self.model.device)

    # ---------------------------------------------------------------- prompts
    @torch.inference_mode()
    def add_prompt(
        self,
        session: VideoSession,
        frame_idx: int,
        text: str | None = None,
        points=None,
        labels=None,
        boxes=None,
        box_labels=None,
        obj_id: int | None = None,
    ) -> FrameResult:
        """Clicks for one object (``obj_id`` default 1), or a text and/or box concept for the whole video."""
        with self.lock:
            s = session
            s.check_open()
            s.use_precision(autocast_dtype_in_effect(self.model.device))
            if not 0 <= frame_idx < s.num_frames:
                raise ValueError(f"frame_idx {frame_idx} is outside the video (0..{s.num_frames - 1})")
            if points is not None and len(points) > 0:
                if text is not None or boxes is not None:
                    raise ValueError("send points in their own prompt (not together with text or boxes)")
                return self._add_points(s, frame_idx, points, labels, 1 if obj_id is None else obj_id)
            if text is None and not boxes:
                raise ValueError("a prompt needs text, points or a box")
            return self._add_concept(s, frame_idx, text, boxes, box_labels)

    def _add_concept(self, s: VideoSession, frame_idx: int, text: str | None, boxes, box_labels) -> FrameResult:
        """A text and/or box prompt: a new concept for the whole video (the session starts over)."""
        if boxes:
            b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            if b.shape[0] != 1:
                raise ValueError("a box prompt takes exactly one box (the visual exemplar)")
            if (b < 0).any() or (b > 1).any():
                raise ValueError("boxes must be normalised [cx, cy, w, h] in 0..1")
            lab = torch.ones(1, 1, dtype=torch.long)
            if box_labels is not None:
                lab = torch.as_tensor(box_labels, dtype=torch.long).reshape(1, -1)
                if lab.shape[1] != 1 or not bool(((lab == 0) | (lab == 1)).all()):
                    raise ValueError("box_labels takes one label (1 positive, 0 negative) for the one box")
        s.reset()
        s.use_precision(autocast_dtype_in_effect(self.model.device))  # the reset freed it; this prompt fixes it
        s.text = text if text is not None and text != VISUAL_TEXT else None
        if boxes:
            device = self.model.device
            s.visual_prompt[frame_idx] = GeometricPrompt.from_boxes(upload(b[None], device), upload(lab, device))
        outcome = self.engine.run_frame(s, frame_idx, reverse=False, prompted=True)
        return self.engine.build_result(s, frame_idx, outcome.masks, hidden=set(), store=True)

    def _add_points(self, s: VideoSession, frame_idx: int, points, labels, obj_id: int) -> FrameResult:
        engine, registry = self.engine, s.objects
        h, w = s.video_hw
        pts = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 2)
        lab = (
            torch.ones(pts.shape[0], dtype=torch.int32)
            if labels is None
            else torch.as_tensor(labels, dtype=torch.int32).reshape(-1)
        )
        if lab.shape[0] != pts.shape[0]:
            raise ValueError(f"{pts.shape[0]} points but {lab.shape[0]} labels")
        coords = pts / torch.tensor([w, h]) * self.model.config.image_size
        engine.visit_frame(s, frame_idx, reverse=False)  # the released code runs the detector here too
        feats = engine.frame_features(s, frame_idx)

        batch = next((b for b in s.batches if obj_id in b.obj_ids), None)
        if batch is None:
            batch = engine.runner.batch_for_new_object(s.batches, frame_idx, s.num_frames, s.video_hw)
            if not any(b is batch for b in s.batches):
                s.batches.append(batch)
            registry.obj_ids.append(obj_id)
            registry.max_obj_id = max(registry.max_obj_id, obj_id)
            s.actions.append(Action(ActionKind.ADD, frame_idx, [obj_id]))
        else:
            s.actions.append(Action(ActionKind.REFINE, frame_idx, [obj_id]))
        registry.score[obj_id] = 1.0
        registry.tracker_score[frame_idx][obj_id] = 1.0
        registry.hotstart.removed.discard(obj_id)
        registry.hotstart.confirm(obj_id)
        for frames in registry.suppressed.values():
            frames.discard(obj_id)

        low = engine.runner.add_points(batch, frame_idx, obj_id, coords, lab, feats.tracker, use_prev_mem_frame=False)
        video = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        video = fill_holes_in_mask_scores(video, self.cfg.fill_hole_area)
        engine.runner.consolidate(batch, lambda t: engine.frame_features(s, t).tracker)
        # detector-made conditioning frames near a click would pull the object back: drop them
        window = self.cfg.refinement_cond_frame_removal_window
        for t in list(batch.mask_inputs.get(obj_id, {})):
            if t not in batch.point_inputs[obj_id] and abs(t - frame_idx) <= window:
                engine.runner.clear_prompts_on_frame(batch, t)

        masks = s.masks_on(frame_idx)
        masks[obj_id] = video[0] > 0
        hidden = registry.suppressed[frame_idx]
        return engine.build_result(s, frame_idx, masks, hidden=set(hidden), store=True)

    @torch.inference_mode()
    def remove_object(self, session: VideoSession, obj_id: int) -> bool:
        with self.lock:
            s = session
            s.check_open()
            if obj_id not in s.objects.obj_ids:
                return False
            self.engine.remove_objects(s, [obj_id])
            s.objects.obj_ids.remove(obj_id)
            s.objects.score.pop(obj_id, None)
            for frame in s.stored_masks.values():
                frame.pop(obj_id, None)
            s.actions.append(Action(ActionKind.REMOVE, None, [obj_id]))
            return True

    def frame_result(self, session: VideoSession, frame_idx: int) -> FrameResult | None:
        """The stored output of a frame already computed (None when it was not), nothing recomputed."""
        with self.lock:
            session.check_open()
            if frame_idx not in session.stored_masks:
                return None
            hidden = set(session.objects.suppressed.get(frame_idx, ()))
            return self.engine.build_result(session, frame_idx, session.masks_on(frame_idx), hidden)

    def computed_frames(self, session: VideoSession, start: int = 0, end: int | None = None) -> list[int]:
        """The frames in ``start..end`` (inclusive; None: the last) whose output is stored, in frame order (read
        under the predictor's lock: a propagation may be adding frames meanwhile)."""
        last = session.num_frames - 1 if end is None else end
        with self.lock:
            return sorted(t for t in session.stored_masks if start <= t <= last)

    def objects_in(self, session: VideoSession, frames: list[int]) -> list[int]:
        """The object ids with a stored mask on any of ``frames``, and the session's current objects, sorted."""
        with self.lock:
            ids = {i for t in frames for i in session.stored_masks.get(t, {})}
            return sorted(ids | set(session.objects.obj_ids))

    def prefetch(self, session: VideoSession, frames: list[int]) -> None:
        """Decode ``frames`` into the session's frame cache now (a caller's decode-ahead thread; frames outside
        the video are ignored). Takes no predictor lock: the frame cache has its own."""
        session.video.prefetch(*frames)

    # ---------------------------------------------------------------- propagation
    def propagate(
        self,
        session: VideoSession,
        direction: str = "both",
        start_frame: int | None = None,
        max_frames: int | None = None,
    ) -> Propagation:
        """Per-frame results: forward first, then backward for "both" (backward excludes the start).

        ``start_frame`` None starts at the earliest frame with outputs; ``max_frames`` None (or < 0) means
        every frame. Bad arguments raise here, before any frame is processed.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be forward, backward or both, not {direction!r}")
        if max_frames is not None and max_frames < 0:
            max_frames = None
        with self.lock:
            s = session
            s.check_open()
            if start_frame is not None and not 0 <= start_frame < s.num_frames:
                raise ValueError(f"start_frame {start_frame} is outside the video (0..{s.num_frames - 1})")
            start = self._start_frame(s) if start_frame is None else start_frame  # raises when nothing was prompted
            s.use_precision(autocast_dtype_in_effect(self.model.device))
        passes = [(reverse, self._order(s, start, max_frames, reverse)) for reverse in DIRECTIONS[direction]]
        return Propagation(self, s, passes, start_frame)

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
