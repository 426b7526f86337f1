"""Typed per-frame tracker inputs, outputs and the memory bank.

B is the number of objects tracked together, C = d_model, g the level-2 grid side, S the model
input size, m = mem_dim. The memory bank is plain Python bookkeeping over frame indices; the
selection rules (which conditioning frames and which past frames the current frame attends to)
live here so that they can be tested without a model.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace

import torch


@dataclass
class TrackerFeatures:
    """The tracker neck's features of one frame.

    image_embed: (B, C, g, g) level-2 features (not memory-conditioned)
    image_pos:   (B, C, g, g) their sine position encoding
    high_res:    [(B, C/8, 4g, 4g), (B, C/4, 2g, 2g)] levels 0 and 1 after the mask decoder's
                 ``conv_s0`` / ``conv_s1`` (applied once per frame, not per click)
    """

    image_embed: torch.Tensor
    image_pos: torch.Tensor
    high_res: list[torch.Tensor]

    @property
    def batch_size(self) -> int:
        return self.image_embed.shape[0]

    @property
    def feat_hw(self) -> tuple[int, int]:
        return (self.image_embed.shape[-2], self.image_embed.shape[-1])

    def expand(self, batch_size: int) -> TrackerFeatures:
        """Broadcast a batch-of-one frame to ``batch_size`` objects (views, no copies)."""
        ex = lambda t: t.expand(batch_size, *t.shape[1:])
        return TrackerFeatures(ex(self.image_embed), ex(self.image_pos), [ex(t) for t in self.high_res])


@dataclass
class PointInputs:
    """Clicks for a batch of objects.

    coords: (B, N, 2) float (x, y) in model-input pixels
    labels: (B, N) int32: 1 positive, 0 negative, 2 / 3 box corners, -1 padding
    """

    coords: torch.Tensor
    labels: torch.Tensor

    @property
    def num_points(self) -> int:
        return self.labels.shape[1]


@dataclass
class SamHeadsOutput:
    """Prompt encoder + mask decoder result for B objects (M = 3 with multimask output, else 1).

    low_res_multimasks:  (B, M, 4g, 4g) logits, -1024 where the object is predicted absent
    high_res_multimasks: (B, M, S, S) bilinear upsampling of the above
    ious:                (B, M) predicted IoUs
    low_res_masks:       (B, 1, 4g, 4g) the mask with the best predicted IoU
    high_res_masks:      (B, 1, S, S)
    obj_ptr:             (B, C) object pointer (``no_obj_ptr`` where the object is absent)
    object_score_logits: (B, 1)
    """

    low_res_multimasks: torch.Tensor
    high_res_multimasks: torch.Tensor
    ious: torch.Tensor
    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor


@dataclass
class FrameMemory:
    """What the bank keeps of one frame for a batch of objects.

    pred_masks:          (B, 1, h, w) low-res mask logits (4g, or 4 * (input_mask // stride) for a mask input)
    obj_ptr:             (B, C)
    object_score_logits: (B, 1)
    maskmem_features:    (B, m, g, g) or None when the memory encoder has not run yet
    maskmem_pos:         (B, m, g, g) or None
    iou_score:           (B,) best predicted IoU, with memory selection
    eff_iou_score:       () the frame's memory-selection score; None excludes the frame from selection
    eff_iou_value:       the same score as a Python float when the caller already read it back (with other
                         values of the frame, in one transfer); None: read from ``eff_iou_score`` when needed
    """

    pred_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    maskmem_features: torch.Tensor | None = None
    maskmem_pos: torch.Tensor | None = None
    iou_score: torch.Tensor | None = None
    eff_iou_score: torch.Tensor | None = None
    eff_iou_value: float | None = None

    def with_memory(self, features: torch.Tensor, pos: torch.Tensor) -> FrameMemory:
        """A copy carrying a (re-)encoded spatial memory."""
        return replace(self, maskmem_features=features, maskmem_pos=pos)


@dataclass
class TrackStepOutput:
    """Result of ``Sam3Tracker.track_step`` for one frame and B objects.

    pred_masks:          (B, 1, h, w) low-res logits (see ``FrameMemory``)
    pred_masks_high_res: (B, 1, S', S') logits at the model input size (or the input-mask size for a mask input)
    ious:                (B, M) predicted IoUs of the candidate masks (1 for a mask input)
    the remaining fields as in ``FrameMemory``.
    """

    pred_masks: torch.Tensor
    pred_masks_high_res: torch.Tensor
    ious: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    maskmem_features: torch.Tensor | None = None
    maskmem_pos: torch.Tensor | None = None
    iou_score: torch.Tensor | None = None
    eff_iou_score: torch.Tensor | None = None

    def to_memory(self) -> FrameMemory:
        """The compact entry to store in a ``MemoryBank``."""
        return FrameMemory(
            pred_masks=self.pred_masks,
            obj_ptr=self.obj_ptr,
            object_score_logits=self.object_score_logits,
            maskmem_features=self.maskmem_features,
            maskmem_pos=self.maskmem_pos,
            iou_score=self.iou_score,
            eff_iou_score=self.eff_iou_score,
        )


@dataclass
class MemoryBank:
    """Per-frame memories of one batch of objects: conditioning frames (with prompts) and the rest."""

    cond: dict[int, FrameMemory] = field(default_factory=dict)
    non_cond: dict[int, FrameMemory] = field(default_factory=dict)

    def add(self, frame_idx: int, memory: FrameMemory, is_cond: bool) -> None:
        (self.cond if is_cond else self.non_cond)[frame_idx] = memory

    def get(self, frame_idx: int) -> FrameMemory | None:
        return self.cond.get(frame_idx, self.non_cond.get(frame_idx))

    def __len__(self) -> int:
        return len(self.cond) + len(self.non_cond)

    def prune(self, frame_idx: int, window: int, anchors=(), keep=()) -> int:
        """Forget non-conditioning memories more than ``window`` frames away from ``frame_idx``, from every
        conditioning frame and from every frame of ``anchors``; frames in ``keep`` stay. Returns how many
        were dropped. ``window <= 0`` keeps everything (as released).

        What the tracker reads from the bank on frame t (see ``Sam3Tracker.gather_memory``): the
        conditioning frames (always kept), ``num_maskmem - 1`` recent frames and ``max_obj_ptrs - 1``
        object pointers, chosen by memory selection among the non-conditioning frames behind t. Without
        memory selection these are the 15 frames next to t. With it (the released setting), selection scans
        back from t until it has found ``max_obj_ptrs - 1`` frames whose score passes the threshold: a
        pruned bank changes a result only when fewer than that many of the ``window`` frames behind t pass
        (the object absent or uncertain on more than ``window - 15`` of them), where the released model would
        reach further back.
        """
        if window <= 0 or not self.non_cond:
            return 0
        centres = sorted({frame_idx, *self.cond, *anchors})
        keep = set(keep)
        dropped = 0
        for t in list(self.non_cond):
            if t in keep:
                continue
            k = bisect.bisect_left(centres, t)
            near = (k < len(centres) and centres[k] - t <= window) or (k > 0 and t - centres[k - 1] <= window)
            if not near:
                del self.non_cond[t]
                dropped += 1
        return dropped

    def select_cond_frames(self, frame_idx: int, max_num: int) -> tuple[dict[int, FrameMemory], dict[int, FrameMemory]]:
        """Split the conditioning frames into (selected, unselected), at most ``max_num`` selected.

        Selected first: the nearest one before ``frame_idx``, the nearest one at or after it, then the
        rest by temporal distance (ties keep insertion order). ``max_num = -1`` selects all.
        """
        if max_num == -1 or len(self.cond) <= max_num:
            return dict(self.cond), {}
        if max_num < 2:
            raise ValueError("at least 2 conditioning frames must be allowed")
        picked: list[int] = []
        before = [t for t in self.cond if t < frame_idx]
        after = [t for t in self.cond if t >= frame_idx]
        if before:
            picked.append(max(before))
        if after:
            picked.append(min(after))
        rest = sorted((t for t in self.cond if t not in picked), key=lambda t: abs(t - frame_idx))
        picked += rest[: max_num - len(picked)]
        selected = {t: self.cond[t] for t in picked}
        unselected = {t: m for t, m in self.cond.items() if t not in selected}
        return selected, unselected

    def select_memory_frames(
        self, frame_idx: int, num_frames: int, reverse: bool, max_num: int, threshold: float
    ) -> list[int]:
        """Memory selection: recent non-conditioning frames whose ``eff_iou_score`` exceeds ``threshold``.

        Scans away from ``frame_idx`` (backwards when tracking forward), keeps at most
        ``min(num_frames, max_num) - 1`` frames, ordered so that the frame adjacent to ``frame_idx``
        comes last; that adjacent frame is always included. Frame 0 (forward) / the last frame
        (reverse) is never scanned, as in the released model.
        """
        if (frame_idx == 0 and not reverse) or (frame_idx == num_frames - 1 and reverse):
            return []
        limit = min(num_frames, max_num)
        scan = range(frame_idx + 1, num_frames) if reverse else range(frame_idx - 1, 0, -1)
        adjacent = frame_idx + 1 if reverse else frame_idx - 1
        valid: list[int] = []
        for i in scan:
            mem = self.non_cond.get(i)
            if mem is None or mem.eff_iou_score is None:
                continue
            score = mem.eff_iou_value if mem.eff_iou_value is not None else float(mem.eff_iou_score)
            if score > threshold:
                valid.insert(0, i)
            if len(valid) >= limit - 1:
                break
        if adjacent not in valid:
            valid.append(adjacent)
        return valid
