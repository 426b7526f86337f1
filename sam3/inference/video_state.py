"""Typed state of a video tracking session and its per-frame results.

Replaces the official string-keyed ``inference_state`` / ``tracker_metadata`` dictionaries.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from sam3.inference.association import HotstartState
from sam3.inference.tracklets import TrackletBatch
from sam3.inference.video_io import VideoFrames
from sam3.modeling.outputs import BackboneFeatures, GeometricPrompt, TextFeatures
from sam3.modeling.tracker.state import TrackerFeatures


@dataclass
class FrameFeatures:
    """One frame's backbone outputs, kept while the algorithm may still need them."""

    backbone: BackboneFeatures
    tracker: TrackerFeatures


@dataclass
class Detections:
    """Detector output on one frame: boxes (N, 4) normalised xyxy, masks (N, 4g, 4g) logits, scores (N,)
    (every query, or those above the score threshold)."""

    boxes: torch.Tensor
    masks: torch.Tensor
    scores: torch.Tensor


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


@dataclass
class Action:
    """A user action, used to decide what the next propagation has to recompute."""

    kind: str  # "add" | "refine" | "remove" | "propagation_full" | "propagation_partial" | "propagation_fetch"
    frame_idx: int | None = None
    obj_ids: list[int] | None = None


@dataclass
class VideoSession:
    """Everything one tracking session holds; ``close`` drops it all."""

    session_id: str
    resource_path: str
    video: VideoFrames
    text: str | None = None
    visual_prompt: dict[int, GeometricPrompt] = field(default_factory=dict)  # frame -> the one visual box
    text_cache: dict[tuple[str, ...], TextFeatures] = field(default_factory=dict)
    features: dict[int, FrameFeatures] = field(default_factory=dict)
    detector_prompt_frame: dict[int, int] = field(default_factory=dict)  # frame -> frame whose box it sees
    detections: dict[int, Detections] = field(default_factory=dict)  # frame -> every query (<= 2 frames)
    batches: list[TrackletBatch] = field(default_factory=list)
    objects: ObjectRegistry = field(default_factory=ObjectRegistry)
    frames_with_outputs: set[int] = field(default_factory=set)
    cached_masks: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)  # frame -> id -> (1, H, W) bool
    actions: list[Action] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)

    @property
    def num_frames(self) -> int:
        return self.video.num_frames

    @property
    def video_hw(self) -> tuple[int, int]:
        return (self.video.height, self.video.width)

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
        self.cached_masks.clear()
        self.actions.clear()

    def close(self) -> None:
        self.reset()
        self.text_cache.clear()
        self.video.frames = self.video.frames.new_zeros(0)


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
