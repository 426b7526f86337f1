"""A batch of tracked objects that share one memory bank (the official "tracker inference state").

The detect-then-track video predictor creates one :class:`TrackletBatch` per frame on which new
objects appear (and one per user-clicked object); each batch runs ``Sam3Tracker.track_step`` for all
its objects at once. Prompts (clicks, masks) first produce *pending* per-object outputs; ``consolidate``
merges them into the batch's memory bank, re-encoding the memory after the non-overlap constraint.

Shapes: B objects in the batch, 4g the low-res mask side (288), S the model input size (1008),
M the input-mask size (1152), H x W the video frame size.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from sam3.inference.batched_tracking import encode_memories, track_frame
from sam3.modeling.tracker.state import FrameMemory, MemoryBank, PointInputs, TrackerFeatures
from sam3.modeling.tracker.tracker import Sam3Tracker, memory_selection_score

NO_OBJ_SCORE = -1024.0
# The released model stores spatial memories in bf16: the rounding changes the tracks, so we round the
# same way (and keep the rounded values in the compute dtype, so that memory attention runs in one dtype).
MEMORY_STORAGE_DTYPE = torch.bfloat16


def quantize_memory(features: torch.Tensor) -> torch.Tensor:
    """Round (B, m, g, g) memory features through bf16, back in their own dtype."""
    return features.to(MEMORY_STORAGE_DTYPE).to(features.dtype)


def non_overlap(masks: torch.Tensor) -> torch.Tensor:
    """(B, 1, h, w) logits: at each pixel only the highest-scoring object keeps its score, others <= -10."""
    if masks.shape[0] == 1:
        return masks
    keep = masks.argmax(dim=0, keepdim=True) == torch.arange(masks.shape[0], device=masks.device)[:, None, None, None]
    return torch.where(keep, masks, masks.clamp(max=-10.0))


@dataclass
class PendingOutput:
    """A prompted frame's result for one object, waiting to be consolidated.

    memory:      the object's FrameMemory (pred_masks (1, 1, h, w) low-res logits; no spatial memory yet)
    video_masks: (1, 1, H, W) logits at video size for mask prompts (+-1024), else None
    """

    memory: FrameMemory
    video_masks: torch.Tensor | None = None


@dataclass
class TrackletBatch:
    """Objects tracked together: inputs, pending outputs and the shared memory bank."""

    num_frames: int
    video_hw: tuple[int, int]
    obj_ids: list[int] = field(default_factory=list)
    point_inputs: dict[int, dict[int, PointInputs]] = field(default_factory=dict)  # obj -> frame -> clicks
    mask_inputs: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)  # obj -> frame -> (H, W) bool
    pending: dict[int, dict[int, tuple[PendingOutput, bool]]] = field(
        default_factory=dict
    )  # obj -> frame -> (out, is_cond)
    bank: MemoryBank = field(default_factory=MemoryBank)
    consolidated_cond: set[int] = field(default_factory=set)
    consolidated_non_cond: set[int] = field(default_factory=set)
    tracked_frames: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse
    tracking_started: bool = False
    # Recent memories hidden from the per-object view after a click (the batched bank keeps them, as released).
    hidden_non_cond: set[int] = field(default_factory=set)

    # ---------------------------------------------------------------- bookkeeping
    def index_of(self, obj_id: int) -> int:
        if obj_id not in self.obj_ids:
            if self.tracking_started:
                raise ValueError(f"cannot add object {obj_id} to a batch that is already tracking")
            self.obj_ids.append(obj_id)
            self.point_inputs[obj_id] = {}
            self.mask_inputs[obj_id] = {}
            self.pending[obj_id] = {}
        return self.obj_ids.index(obj_id)

    def object_bank(self, obj_id: int) -> MemoryBank:
        """A view of the bank restricted to one object."""
        i = self.obj_ids.index(obj_id)
        return MemoryBank(
            cond={t: slice_memory(m, [i]) for t, m in self.bank.cond.items()},
            non_cond={t: slice_memory(m, [i]) for t, m in self.bank.non_cond.items() if t not in self.hidden_non_cond},
        )

    def previous_logits(self, obj_id: int, frame_idx: int, is_cond: bool) -> torch.Tensor | None:
        """The latest low-res logits of an object on a frame (pending first), clamped to +-32."""
        pend = self.pending[obj_id].get(frame_idx)
        if pend is not None and pend[1] == is_cond:
            if pend[0].video_masks is not None:
                return None  # a mask prompt has no low-res logits to refine
            mem = pend[0].memory
        else:
            mem = self.object_bank(obj_id).get(frame_idx)
        if mem is None:
            return None
        return mem.pred_masks.clamp(-32.0, 32.0)


@dataclass
class TrackedFrame:
    """Every tracked object of a frame, in batch order.

    masks:  (N, 1, 4g, 4g) low-res logits (or the stored size of a prompted frame's mask input)
    scores: the N object-score logits, read back to the host (Python floats)
    """

    masks: torch.Tensor
    scores: list[float]


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def slice_memory(mem: FrameMemory, idx: list[int]) -> FrameMemory:
    """The entries of the objects at positions ``idx`` (the frame score is recomputed by the caller if needed)."""
    pick = lambda t: None if t is None else t[idx]  # noqa: E731
    return FrameMemory(
        pred_masks=mem.pred_masks[idx],
        obj_ptr=mem.obj_ptr[idx],
        object_score_logits=mem.object_score_logits[idx],
        maskmem_features=pick(mem.maskmem_features),
        maskmem_pos=pick(mem.maskmem_pos),
        iou_score=pick(mem.iou_score),
        eff_iou_score=mem.eff_iou_score,
        eff_iou_value=mem.eff_iou_value,
    )


class TrackletRunner:
    """Runs a :class:`Sam3Tracker` over :class:`TrackletBatch` objects (no state of its own)."""

    def __init__(self, tracker: Sam3Tracker, bucket: bool = True):
        self.tracker = tracker
        self.bucket = bucket  # pad the objects of a frame to 1, 2, 4, 8, ... (``batched_tracking``)
        cfg = tracker.config
        self.image_size = cfg.image_size
        self.low_res = cfg.low_res_mask_size
        self.input_mask_size = cfg.input_mask_size
        self.num_maskmem = cfg.tracker.num_maskmem
        self.max_points = 16  # first 8 and last 8 clicks reach the prompt encoder

    # ---------------------------------------------------------------- batches
    def new_batch(self, num_frames: int, video_hw: tuple[int, int]) -> TrackletBatch:
        return TrackletBatch(num_frames=num_frames, video_hw=video_hw)

    def batch_for_new_object(
        self, batches: list[TrackletBatch], frame_idx: int, num_frames: int, video_hw: tuple[int, int]
    ) -> TrackletBatch:
        """Where a clicked new object goes: a batch of its own (not yet in ``batches``)."""
        return self.new_batch(num_frames, video_hw)

    @staticmethod
    def row_ids(batches: list[TrackletBatch]) -> list[int]:
        """The ids of a frame's rows (:meth:`step_many`): the batches' objects in batch order."""
        return [i for batch in batches for i in batch.obj_ids]

    @staticmethod
    def row_order(obj_ids: list[int]) -> list[int]:
        """The tracked ids (kept in batch order) in the order of a frame's rows: unchanged."""
        return list(obj_ids)

    # ---------------------------------------------------------------- prompts
    def add_mask(
        self, batch: TrackletBatch, frame_idx: int, obj_id: int, mask: torch.Tensor, features: TrackerFeatures
    ) -> None:
        """A binary (h, w) mask prompt (e.g. a detection at the input-mask size) for one object."""
        batch.index_of(obj_id)
        h_vid, w_vid = batch.video_hw
        mask_f = mask[None, None].float().to(features.image_embed.device)
        if mask_f.shape[-2:] != (self.input_mask_size, self.input_mask_size):
            model_mask = F.interpolate(
                mask_f, size=(self.input_mask_size,) * 2, mode="bilinear", align_corners=False, antialias=True
            )
        else:
            model_mask = mask_f
        video_mask = mask_f
        if mask_f.shape[-2:] != (h_vid, w_vid):
            video_mask = F.interpolate(
                mask_f, size=(h_vid, w_vid), mode="bilinear", align_corners=False, antialias=True
            )
        video_mask = video_mask > 0.5
        batch.mask_inputs[obj_id][frame_idx] = video_mask[0, 0]
        batch.point_inputs[obj_id].pop(frame_idx, None)
        is_init = frame_idx not in batch.tracked_frames
        reverse = False if is_init else batch.tracked_frames[frame_idx]
        out = self.tracker.track_step(
            frame_idx,
            is_init,
            features.expand(1),
            batch.object_bank(obj_id),
            batch.num_frames,
            mask_inputs=model_mask,
            reverse=reverse,
            run_mem_encoder=False,
        )
        video_logits = torch.where(video_mask, -NO_OBJ_SCORE, NO_OBJ_SCORE)
        batch.pending[obj_id][frame_idx] = (PendingOutput(out.to_memory(), video_logits), True)
        # A new mask prompt takes its pixels away from the other objects' pending mask prompts.
        for other in batch.obj_ids:
            if other == obj_id:
                continue
            pend = batch.pending[other].get(frame_idx)
            if pend is not None and pend[1] and pend[0].video_masks is not None:
                pend[0].video_masks = torch.where(video_mask, NO_OBJ_SCORE, pend[0].video_masks)

    def add_points(
        self,
        batch: TrackletBatch,
        frame_idx: int,
        obj_id: int,
        coords: torch.Tensor,
        labels: torch.Tensor,
        features: TrackerFeatures,
        use_prev_mem_frame: bool = False,
    ) -> torch.Tensor:
        """Clicks (N, 2) in model-input pixels with labels (N,) for one object (replacing earlier clicks on
        that frame). Returns the object's (1, 1, 4g, 4g) low-res logits."""
        batch.index_of(obj_id)
        coords = coords.reshape(1, -1, 2).float().to(features.image_embed.device)
        labels = labels.reshape(1, -1).to(torch.int32).to(coords.device)
        if coords.shape[1] > self.max_points:
            half = self.max_points // 2
            coords = torch.cat([coords[:, :half], coords[:, -(self.max_points - half) :]], dim=1)
            labels = torch.cat([labels[:, :half], labels[:, -(self.max_points - half) :]], dim=1)
        points = PointInputs(coords, labels)
        batch.point_inputs[obj_id][frame_idx] = points
        batch.mask_inputs[obj_id].pop(frame_idx, None)
        is_init = frame_idx not in batch.tracked_frames
        reverse = False if is_init else batch.tracked_frames[frame_idx]
        prev = batch.previous_logits(obj_id, frame_idx, True)
        out = self.tracker.track_step(
            frame_idx,
            is_init,
            features.expand(1),
            batch.object_bank(obj_id),
            batch.num_frames,
            point_inputs=points,
            reverse=reverse,
            run_mem_encoder=False,
            prev_mask_logits=prev,
            use_prev_mem_frame=use_prev_mem_frame,
        )
        batch.pending[obj_id][frame_idx] = (PendingOutput(out.to_memory()), True)
        return out.pred_masks

    # ---------------------------------------------------------------- consolidation
    def consolidate(self, batch: TrackletBatch, features_of, run_mem_encoder: bool = True) -> None:
        """Merge every pending output into the bank (``features_of(frame) -> TrackerFeatures``)."""
        batch.tracking_started = True
        for is_cond in (False, True):
            frames = sorted({t for per in batch.pending.values() for t, (_, c) in per.items() if c == is_cond})
            for t in frames:
                mem = self._consolidate_frame(batch, t, is_cond, features_of(t), run_mem_encoder)
                batch.bank.add(t, mem, is_cond)
                (batch.consolidated_cond if is_cond else batch.consolidated_non_cond).add(t)
                if len(batch.obj_ids) <= 1:
                    self.clear_non_cond_around(batch, t)
            for per in batch.pending.values():
                for t in [t for t, (_, c) in per.items() if c == is_cond]:
                    del per[t]
        for t in batch.bank.cond:
            batch.bank.non_cond.pop(t, None)
            batch.consolidated_non_cond.discard(t)

    def _consolidate_frame(
        self, batch: TrackletBatch, frame_idx: int, is_cond: bool, features: TrackerFeatures, run_mem_encoder: bool
    ) -> FrameMemory:
        n = len(batch.obj_ids)
        device = features.image_embed.device
        hidden = self.tracker.hidden_dim
        masks = torch.full((n, 1, self.low_res, self.low_res), NO_OBJ_SCORE, device=device)
        ptrs = torch.full((n, hidden), NO_OBJ_SCORE, device=device)
        scores = torch.full((n, 1), 10.0, device=device)
        ious = torch.zeros(n, 1, device=device)  # (B, 1), as released: it changes the memory-selection mean
        empty_ptr = None
        for i, obj_id in enumerate(batch.obj_ids):
            pend = batch.pending[obj_id].get(frame_idx)
            video_masks = None
            if pend is not None and pend[1] == is_cond:
                mem, video_masks = pend[0].memory, pend[0].video_masks
            else:
                mem = batch.object_bank(obj_id).get(frame_idx)
            if mem is None:
                if run_mem_encoder:
                    if empty_ptr is None:
                        empty_ptr = self.tracker.empty_mask_pointer(features)
                    ptrs[i : i + 1] = empty_ptr
                continue
            src = video_masks if video_masks is not None else mem.pred_masks
            if src.shape[-2:] != masks.shape[-2:]:
                src = F.interpolate(
                    src.float(),
                    size=masks.shape[-2:],
                    mode="bilinear",
                    align_corners=False,
                    antialias=video_masks is not None,
                )
            masks[i : i + 1] = src
            ptrs[i : i + 1] = mem.obj_ptr
            scores[i : i + 1] = mem.object_score_logits
            if mem.iou_score is not None:
                ious[i : i + 1] = mem.iou_score.reshape(-1, 1)
        out = FrameMemory(pred_masks=masks, obj_ptr=ptrs, object_score_logits=scores, iou_score=ious)
        if run_mem_encoder:
            high = F.interpolate(masks, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
            high = non_overlap(high)
            feats, pos = self.tracker.encode_new_memory(features.expand(n).image_embed, high, scores, True)
            out = out.with_memory(quantize_memory(feats), pos)
        return out

    def clear_non_cond_around(self, batch: TrackletBatch, frame_idx: int) -> None:
        """Hide recent non-conditioning memories around a prompted frame from the per-object view (they may
        be outdated); the batched bank keeps them, as in the released model."""
        batch.hidden_non_cond.update(range(frame_idx - self.num_maskmem, frame_idx + self.num_maskmem + 1))

    # ---------------------------------------------------------------- propagation
    def step_many(
        self,
        batches: list[TrackletBatch],
        frame_idx: int,
        reverse: bool,
        features: TrackerFeatures,
        run_mem_encoder: bool = False,
    ) -> TrackedFrame:
        """Track every object of every batch on one frame (objects in batch order). Frames a batch already
        holds (its prompted frames) are read back; the others are tracked together
        (``batched_tracking.track_frame``: one memory attention per memory layout, one mask decoder and one
        memory encoder for all). The object scores and the new memories' selection scores come back to the
        host in one transfer."""
        mems: list[FrameMemory | None] = [None] * len(batches)
        todo: list[int] = []
        for k, batch in enumerate(batches):
            if not batch.bank.cond:
                raise ValueError("the batch has no prompted frame to track from")
            if frame_idx in batch.consolidated_cond:
                mems[k] = batch.bank.cond[frame_idx]
                if len(batch.obj_ids) <= 1:
                    self.clear_non_cond_around(batch, frame_idx)
            elif frame_idx in batch.consolidated_non_cond:
                mems[k] = batch.bank.non_cond[frame_idx]
            else:
                todo.append(k)
        if todo:
            outs = track_frame(
                self.tracker,
                features,
                [batches[k].bank for k in todo],
                [len(batches[k].obj_ids) for k in todo],
                frame_idx,
                batches[todo[0]].num_frames,
                reverse,
                run_mem_encoder,
                self.bucket,
            )
            for k, out in zip(todo, outs):
                mem = out.to_memory()
                if mem.maskmem_features is not None:
                    mem = mem.with_memory(quantize_memory(mem.maskmem_features), mem.maskmem_pos)
                mems[k] = mem
        for batch in batches:
            batch.tracked_frames[frame_idx] = reverse
        masks = _cat([m.pred_masks for m in mems])
        scores = _cat([m.object_score_logits for m in mems])
        selection = [k for k in todo if mems[k].eff_iou_score is not None]
        # one device-to-host read: every object's score, then the new memories' selection scores
        values = _cat([scores.reshape(-1)] + [mems[k].eff_iou_score.reshape(1) for k in selection]).tolist()
        n = scores.shape[0]
        for k, value in zip(selection, values[n:]):
            mems[k] = replace(mems[k], eff_iou_value=value)
        for k in todo:
            batches[k].bank.non_cond[frame_idx] = mems[k]
            batches[k].hidden_non_cond.discard(frame_idx)
        return TrackedFrame(masks, values[:n])

    def store_memories(
        self,
        batches: list[TrackletBatch],
        frame_idx: int,
        high_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        features: TrackerFeatures,
    ) -> None:
        """Encode (N, 1, M, M) mask logits (sigmoid path) as this frame's memory for the objects of every
        batch, in batch order (the memory encoder runs once for all N)."""
        feats, pos = encode_memories(self.tracker, features, high_res_masks, object_score_logits, self.bucket)
        sizes = [len(b.obj_ids) for b in batches]
        feats = quantize_memory(feats)
        for batch, f, p in zip(batches, torch.split(feats, sizes), torch.split(pos, sizes)):
            for store in (batch.bank.cond, batch.bank.non_cond):
                if frame_idx in store:
                    store[frame_idx] = store[frame_idx].with_memory(f, p)
            batch.hidden_non_cond.discard(frame_idx)

    # ---------------------------------------------------------------- removal
    def remove_object(self, batch: TrackletBatch, obj_id: int) -> None:
        """Forget one object everywhere in the batch (a batch left empty should be dropped by the caller).

        As released: a frame that only this object prompted stops being a conditioning frame (and when
        no conditioning frame is left, the batch loses all its memories), and every remaining frame's
        memory-selection score is recomputed for the remaining objects (also on frames that had none).
        """
        if obj_id not in batch.obj_ids:
            return
        if len(batch.obj_ids) == 1:
            batch.obj_ids.clear()
            return
        prompted = set(batch.point_inputs[obj_id]) | set(batch.mask_inputs[obj_id])
        for t in sorted(prompted):
            batch.point_inputs[obj_id].pop(t, None)
            batch.mask_inputs[obj_id].pop(t, None)
            batch.pending[obj_id].pop(t, None)
            if not any(t in batch.point_inputs[o] or t in batch.mask_inputs[o] for o in batch.obj_ids):
                self._downgrade_frame(batch, t)
        keep = [i for i, o in enumerate(batch.obj_ids) if o != obj_id]
        for store in (batch.bank.cond, batch.bank.non_cond):
            for t, m in list(store.items()):
                sliced = slice_memory(m, keep)
                if sliced.iou_score is not None:
                    score = memory_selection_score(sliced.object_score_logits, sliced.iou_score)
                    sliced = replace(sliced, eff_iou_score=score, eff_iou_value=None)
                store[t] = sliced
        batch.obj_ids.remove(obj_id)
        for d in (batch.point_inputs, batch.mask_inputs, batch.pending):
            d.pop(obj_id, None)

    def clear_prompts_on_frame(self, batch: TrackletBatch, frame_idx: int) -> None:
        """Remove every object's prompt on a frame, downgrading it to an ordinary tracked frame."""
        for obj_id in batch.obj_ids:
            batch.point_inputs[obj_id].pop(frame_idx, None)
            batch.mask_inputs[obj_id].pop(frame_idx, None)
            batch.pending[obj_id].pop(frame_idx, None)
        self._downgrade_frame(batch, frame_idx)

    def _downgrade_frame(self, batch: TrackletBatch, frame_idx: int) -> None:
        """A frame left without prompts: its conditioning memory becomes an ordinary one; with no
        conditioning frame left at all, the batch forgets every memory (it must be prompted again)."""
        batch.consolidated_cond.discard(frame_idx)
        batch.consolidated_non_cond.discard(frame_idx)
        mem = batch.bank.cond.pop(frame_idx, None)
        if mem is not None:
            batch.bank.non_cond[frame_idx] = mem
            batch.tracked_frames.pop(frame_idx, None)
        if not batch.bank.cond:
            batch.bank = MemoryBank()
            batch.consolidated_cond.clear()
            batch.consolidated_non_cond.clear()
            batch.tracked_frames.clear()
            batch.hidden_non_cond.clear()
            batch.tracking_started = False
            for obj in batch.obj_ids:
                batch.point_inputs[obj].clear()
                batch.mask_inputs[obj].clear()
                batch.pending[obj].clear()
