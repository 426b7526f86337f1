"""Typed state of a video tracking session and its per-frame results.

Replaces the official string-keyed ``inference_state`` / ``tracker_metadata`` dictionaries.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import torch

from sam3.device import PrecisionMismatch, describe_compute
from sam3.inference.association import HotstartState
from sam3.inference.tracklets import TrackletBatch
from sam3.inference.video_io import VideoSource
from sam3.modeling.outputs import BackboneFeatures, GeometricPrompt, TextFeatures
from sam3.modeling.tracker.state import TrackerFeatures


class SessionClosed(ValueError):
    """The session was closed; open a new one."""


@dataclass
class FrameFeatures:
    """One frame's backbone outputs, kept while the algorithm may still need them.

    ``tracker``: the tracker's features, made at once. The detector's levels (``backbone``) are made from the
    kept trunk map ``trunk`` (1, C_trunk, g, g) when a detection first asks (:meth:`detector_features`): a frame
    that only tracks clicked objects never runs the detector neck.
    """

    tracker: TrackerFeatures
    backbone: BackboneFeatures | None = None
    trunk: torch.Tensor | None = field(default=None, repr=False)

    def detector_features(self, model) -> BackboneFeatures:
        """The detector levels, made from the trunk map on first use (``model``: a ``Sam3Model``)."""
        if self.backbone is None:
            fpn, pos = model.detector_levels(self.trunk)
            self.backbone, self.trunk = BackboneFeatures(fpn, pos), None
        return self.backbone


@dataclass
class Detections:
    """Detector output on one frame: boxes (N, 4) normalised xyxy, masks (N, 4g, 4g) logits, scores (N,)
    (every query, or those above the score threshold); ``host_scores`` (N,) float32, the same scores on the host
    once the detection has read them (its one read)."""

    boxes: torch.Tensor
    masks: torch.Tensor
    scores: torch.Tensor
    host_scores: np.ndarray | None = None


@dataclass
class ObjectRegistry:
    """What the session knows about its objects (the official "tracker metadata").

    obj_ids:        tracked ids in batch order (concatenation of the batches' ids)
    score:          id -> detection score at creation (1.0 for clicked objects; -1e4 once removed)
    tracker_score:  frame -> id -> tracker confidence on that frame (sigmoid of the object-score logit)
    last_occluded:  id -> (1,) long frame index of the last occlusion
    max_obj_id:     the largest id handed out so far (ids are never reused)
    """

    obj_ids: list[int] = field(default_factory=list)
    score: dict[int, float] = field(default_factory=dict)
    tracker_score: dict[int, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    last_occluded: dict[int, torch.Tensor] = field(default_factory=dict)
    max_obj_id: int = -1
    hotstart: HotstartState = field(default_factory=HotstartState)
    suppressed: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))


class ActionKind(Enum):
    """What a user did; the last actions decide what the next propagation recomputes (as released)."""

    ADD = "add"
    REFINE = "refine"
    REMOVE = "remove"
    PROPAGATION_FULL = "propagation_full"
    PROPAGATION_PARTIAL = "propagation_partial"
    PROPAGATION_FETCH = "propagation_fetch"

    @property
    def is_propagation(self) -> bool:
        return self in (ActionKind.PROPAGATION_FULL, ActionKind.PROPAGATION_PARTIAL, ActionKind.PROPAGATION_FETCH)


@dataclass
class Action:
    """A user action, used to decide what the next propagation has to recompute."""

    kind: ActionKind
    frame_idx: int | None = None
    obj_ids: list[int] | None = None


class CompactMask:
    """One object's (1, H, W) boolean mask on one frame, kept as run-length encoding (pycocotools).

    A 1280x720 mask is 0.9 MB as a bool tensor and typically a few hundred bytes as RLE; decoding gives
    the same pixels back. The runs go along the rows (COCO's go down the columns): a row-major mask, seen
    transposed, is the column-major array pycocotools encodes, so neither side copies or converts the pixels.
    """

    __slots__ = ("rle",)

    def __init__(self, mask: torch.Tensor | np.ndarray):
        """A (1, H, W) or (H, W) bool mask: a tensor (on any device) or a host array."""
        from pycocotools import mask as mask_utils

        if isinstance(mask, torch.Tensor):
            mask = mask.to("cpu", torch.bool).numpy()
        arr = np.ascontiguousarray(mask, bool).reshape(mask.shape[-2:])
        self.rle = mask_utils.encode(arr.view(np.uint8).T)  # (W, H) Fortran order: the runs of the rows

    def decode(self) -> torch.Tensor:
        """(1, H, W) bool on the CPU."""
        from pycocotools import mask as mask_utils

        return torch.from_numpy(mask_utils.decode(self.rle).T.view(bool))[None]

    def nbytes(self) -> int:
        return len(self.rle["counts"]) + 16


@dataclass
class VideoSession:
    """Everything one tracking session holds; ``close`` drops it all."""

    session_id: str
    resource_path: str
    video: VideoSource
    text: str | None = None
    visual_prompt: dict[int, GeometricPrompt] = field(default_factory=dict)  # frame -> the one visual box
    text_cache: dict[tuple[str, ...], TextFeatures] = field(default_factory=dict)
    features: dict[int, FrameFeatures] = field(default_factory=dict)
    detector_prompt_frame: dict[int, int] = field(default_factory=dict)  # frame -> frame whose box it sees
    detections: dict[int, Detections] = field(default_factory=dict)  # frame -> every query (<= 2 frames)
    batches: list[TrackletBatch] = field(default_factory=list)
    objects: ObjectRegistry = field(default_factory=ObjectRegistry)
    frames_with_outputs: set[int] = field(default_factory=set)
    # frame -> id -> the output mask, run-length encoded (outputs of every computed frame stay, compactly)
    stored_masks: dict[int, dict[int, CompactMask]] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)
    # Frames whose neighbourhood the memory bank keeps whatever the pruning window (a propagation's start:
    # the backward half of "both" reads the memories the forward half wrote next to it).
    anchor_frames: set[int] = field(default_factory=set)
    closed: bool = False
    # The precision its tracking state is made in (the autocast dtype; None: plain fp32), fixed by the first
    # prompt after opening or a reset: prompts and propagation steps under another one are refused.
    compute: torch.dtype | None = None
    compute_fixed: bool = False

    def use_precision(self, now: torch.dtype | None) -> None:
        """Fix the session's precision on first use; afterwards raise ``PrecisionMismatch`` for another one."""
        if not self.compute_fixed:
            self.compute, self.compute_fixed = now, True
        elif now != self.compute:
            raise PrecisionMismatch(
                f"session {self.session_id!r} was prompted under {describe_compute(self.compute)} but this call "
                f"runs under {describe_compute(now)}: make every prompt and propagation of a session inside the "
                "same precision context (or reset the session first)"
            )

    @property
    def num_frames(self) -> int:
        return self.video.num_frames

    @property
    def width(self) -> int:
        return self.video.width

    @property
    def height(self) -> int:
        return self.video.height

    @property
    def fps(self) -> float | None:
        return self.video.fps

    @property
    def video_hw(self) -> tuple[int, int]:
        return (self.video.height, self.video.width)

    @property
    def frames_computed(self) -> int:
        """How many frames have a stored output."""
        return len(self.stored_masks)

    def masks_on(self, frame_idx: int) -> dict[int, torch.Tensor]:
        """The stored output masks of a frame: id -> (1, H, W) bool (empty when not computed)."""
        return {i: m.decode() for i, m in self.stored_masks.get(frame_idx, {}).items()}

    def store_masks(self, frame_idx: int, masks: dict[int, torch.Tensor | np.ndarray]) -> None:
        self.stored_masks[frame_idx] = {i: CompactMask(m) for i, m in masks.items()}

    def reset(self) -> None:
        """Back to the state right after the video was opened (prompts, objects and outputs dropped)."""
        self.text = None
        self.visual_prompt.clear()
        self.features.clear()
        self.detector_prompt_frame.clear()
        self.detections.clear()
        self.batches.clear()
        self.objects = ObjectRegistry()
        self.frames_with_outputs.clear()
        self.stored_masks.clear()
        self.actions.clear()
        self.anchor_frames.clear()
        self.compute, self.compute_fixed = None, False

    def close(self) -> None:
        self.reset()
        self.text_cache.clear()
        self.video.close()
        self.closed = True

    def check_open(self) -> None:
        """Raise :class:`SessionClosed` once the session was closed."""
        if self.closed:
            raise SessionClosed(f"session {self.session_id!r} is closed")

    def propagation_plan(self) -> tuple[ActionKind, list[int] | None]:
        """What the next propagation must recompute, from the actions since the last one (as released): every
        object (full), the clicked objects only (partial, with their ids) or nothing (fetch the stored results)."""
        if not self.actions:
            return ActionKind.PROPAGATION_FULL, None
        last = self.actions[-1]
        if last.kind.is_propagation:
            if last.kind == ActionKind.PROPAGATION_FETCH:
                return ActionKind.PROPAGATION_FETCH, None
            twice = len(self.actions) > 1 and self.actions[-2].kind in (
                ActionKind.PROPAGATION_PARTIAL,
                ActionKind.PROPAGATION_FULL,
            )
            if twice or last.frame_idx in (0, self.num_frames - 1):
                return ActionKind.PROPAGATION_FETCH, None
            return last.kind, last.obj_ids
        ids: list[int] = []
        for a in reversed(self.actions):
            if a.kind.is_propagation:
                break
            if a.kind in (ActionKind.ADD, ActionKind.REFINE):
                ids.extend(a.obj_ids or [])
        return (ActionKind.PROPAGATION_PARTIAL, sorted(set(ids))) if ids else (ActionKind.PROPAGATION_FETCH, None)


@dataclass
class FrameResult:
    """Tracking output for one frame (what the service returns).

    obj_ids:     (N,) int64
    scores:      (N,) float: detection score at creation (1.0 for clicked objects)
    boxes_xyxy:  (N, 4) float pixel boxes of the masks (inclusive max index)
    masks:       (N, H, W) bool at the video size
    """

    frame_idx: int
    obj_ids: np.ndarray
    scores: np.ndarray
    boxes_xyxy: np.ndarray
    masks: np.ndarray

    @property
    def num_objects(self) -> int:
        return int(self.obj_ids.shape[0])

    @property
    def boxes_xywh_normalized(self) -> np.ndarray:
        """(N, 4) x, y, w, h divided by the frame size (the official video output format)."""
        h, w = self.masks.shape[-2:] if self.masks.ndim == 3 else (1, 1)
        out = self.boxes_xyxy.astype(np.float32).copy()
        out[:, 2:] -= out[:, :2]
        out[:, [0, 2]] /= w
        out[:, [1, 3]] /= h
        return out
