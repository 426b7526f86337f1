"""SAM 3.1's tracker states: objects in buckets that share one memory bank (upstream's multiplex "inference state").

A :class:`MultiplexBatch` holds objects 0..N-1 (in the order they were added) in the buckets of a
:class:`MultiplexState`, and one :class:`MultiplexFrame` per remembered frame for all of them. New objects join
the state whose free slots fit them most tightly, else a new state (as released: a state never grows a bucket
once it tracks, so every memory of a state has the same bucket count). Prompts (masks, clicks) first give a
*pending* frame; :meth:`MultiplexRunner.consolidate` merges it into the bank and encodes its memory after the
pixel-wise non-overlap rule.

The runner offers the interface of :class:`~sam3.inference.tracklets.TrackletRunner` that the detect-then-track
engine and the video predictor use. Rows of a frame (masks, scores) come in object-id order across states.

Shapes: N objects of a state, 4g the low-res mask side, S the model input size, S_in the input-mask size,
H x W the video frame size.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from sam3.device import upload
from sam3.inference.tracklets import NO_OBJ_SCORE, TrackedFrame, non_overlap, quantize_memory
from sam3.modeling.multiplex.frames import MultiplexFeatures, MultiplexFrame
from sam3.modeling.multiplex.multiplex_state import MultiplexState
from sam3.modeling.multiplex.tracker import MultiplexTracker
from sam3.modeling.tracker.state import MemoryBank, PointInputs


@dataclass
class PendingFrame:
    """Prompted masks on a frame waiting for consolidation: object index -> (1, 1, H, W) video-size logits."""

    is_cond: bool
    video_masks: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass(eq=False)
class MultiplexBatch:
    """One tracker state: its objects (``obj_ids`` in object-index order), their buckets and their memory bank."""

    num_frames: int
    video_hw: tuple[int, int]
    state: MultiplexState
    obj_ids: list[int] = field(default_factory=list)
    bank: MemoryBank = field(default_factory=MemoryBank)  # of MultiplexFrame
    point_inputs: dict[int, dict[int, PointInputs]] = field(default_factory=dict)  # obj id -> frame -> clicks
    mask_inputs: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)  # obj id -> frame -> (H, W) bool
    pending: dict[int, PendingFrame] = field(default_factory=dict)
    tracked_frames: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse
    refined_frames: set[int] = field(default_factory=set)  # frames clicked on for an object already tracked
    consolidated_cond: set[int] = field(default_factory=set)
    consolidated_non_cond: set[int] = field(default_factory=set)

    @property
    def available_slots(self) -> int:
        return self.state.available_slots

    def index_of(self, obj_id: int) -> int:
        return self.obj_ids.index(obj_id)


class MultiplexRunner:
    """Runs a :class:`MultiplexTracker` over :class:`MultiplexBatch` states (no state of its own)."""

    def __init__(self, tracker: MultiplexTracker):
        self.tracker = tracker
        cfg = tracker.config
        self.multiplex_count = cfg.tracker.multiplex_count
        self.image_size = cfg.image_size
        self.low_res = cfg.low_res_mask_size
        self.input_mask_size = cfg.input_mask_size

    def prepare_features(self, interactive, propagation, pos) -> MultiplexFeatures:
        return self.tracker.prepare_features(interactive, propagation, pos)

    # ---------------------------------------------------------------- states
    def new_batch(self, num_frames: int, video_hw: tuple[int, int]) -> MultiplexBatch:
        return MultiplexBatch(num_frames, video_hw, MultiplexState(self.multiplex_count))

    @staticmethod
    def best_fit(batches: list[MultiplexBatch], count: int) -> MultiplexBatch | None:
        """The state with the fewest free slots that still fit ``count`` objects (first such one on ties)."""
        fits = [b for b in batches if b.available_slots >= count]
        return min(fits, key=lambda b: b.available_slots) if fits else None

    @staticmethod
    def row_ids(batches: list[MultiplexBatch]) -> list[int]:
        """The ids of a frame's rows: every tracked object, in id order."""
        return sorted(i for b in batches for i in b.obj_ids)

    @staticmethod
    def row_order(obj_ids: list[int]) -> list[int]:
        """The tracked ids in the order of a frame's rows: id order."""
        return sorted(obj_ids)

    # ---------------------------------------------------------------- prompts
    def add_mask(
        self, batch: MultiplexBatch, frame_idx: int, obj_id: int, mask: torch.Tensor, feats: MultiplexFeatures
    ) -> None:
        """One (h, w) binary mask for one object (the detect-then-track re-anchoring)."""
        self.add_masks(batch, frame_idx, [obj_id], mask[None], feats)

    def add_masks(
        self,
        batch: MultiplexBatch,
        frame_idx: int,
        obj_ids: list[int],
        masks: torch.Tensor,
        feats: MultiplexFeatures,
        is_cond: bool | None = None,
    ) -> None:
        """Binary (K, h, w) masks for objects of ``batch`` on a frame (new ids join the state's free slots,
        known ids are re-anchored). The state's entry for the frame is updated (or created on a frame the
        state never saw) and the masks wait, at video size, for :meth:`consolidate`. The frame becomes a
        conditioning frame when the state had not tracked it (as released), or as ``is_cond`` says."""
        h_vid, w_vid = batch.video_hw
        m = masks[:, None].float().to(feats.interactive.image.device)
        size = (self.input_mask_size, self.input_mask_size)
        model_masks = (
            m
            if m.shape[-2:] == size
            else F.interpolate(m, size=size, mode="bilinear", align_corners=False, antialias=True)
        )
        video = (
            m
            if m.shape[-2:] == (h_vid, w_vid)
            else F.interpolate(m, size=(h_vid, w_vid), mode="bilinear", align_corners=False, antialias=True)
        )
        video = video > 0.5
        new_ids = [i for i in obj_ids if i not in batch.obj_ids]
        if new_ids and len(new_ids) != len(obj_ids):
            raise ValueError("add new objects and re-anchor known ones in separate calls")
        is_init = frame_idx not in batch.tracked_frames
        entry = batch.bank.get(frame_idx)
        out = self.tracker.mask_as_output(feats, model_masks)
        if new_ids:
            pointers = batch.state.demux(entry.obj_ptr) if entry is not None else None
            first = len(batch.obj_ids)
            if entry is None and batch.obj_ids:
                raise ValueError(f"frame {frame_idx} has no output for the state's objects to join")
            allow_new = batch.state.num_buckets == 0
            batch.state.add_objects(len(new_ids), allow_new_buckets=allow_new)
            batch.obj_ids += new_ids
            for i in new_ids:
                batch.point_inputs[i], batch.mask_inputs[i] = {}, {}
            idx = list(range(first, first + len(new_ids)))
            if entry is None:
                entry = MultiplexFrame(
                    out.low_res_masks, out.object_score_logits, batch.state.mux(out.obj_ptr), frozenset(idx)
                )
            else:
                low = _resize(out.low_res_masks, entry.pred_masks.shape[-2:], antialias=True)
                entry = replace(
                    entry,
                    pred_masks=torch.cat([entry.pred_masks, low]),
                    object_score_logits=torch.cat([entry.object_score_logits, out.object_score_logits]),
                    obj_ptr=batch.state.mux(torch.cat([pointers, out.obj_ptr.to(pointers.dtype)])),
                    conditioning=entry.conditioning | frozenset(idx),
                )
        else:
            if entry is None:
                raise ValueError(f"frame {frame_idx} has no output for the objects to re-anchor")
            idx = [batch.index_of(i) for i in obj_ids]
            pointers = batch.state.demux(entry.obj_ptr).clone()
            pointers[idx] = out.obj_ptr.to(pointers.dtype)
            pred, scores = entry.pred_masks.clone(), entry.object_score_logits.clone()
            pred[idx] = _resize(out.low_res_masks, pred.shape[-2:], antialias=True).to(pred.dtype)
            scores[idx] = out.object_score_logits.to(scores.dtype)
            entry = replace(entry, pred_masks=pred, object_score_logits=scores, obj_ptr=batch.state.mux(pointers),
                            conditioning=entry.conditioning | frozenset(idx))  # fmt: skip
        for i, v in zip(obj_ids, video):
            batch.mask_inputs[i][frame_idx] = v[0]
            batch.point_inputs[i].pop(frame_idx, None)
        is_cond = is_init if is_cond is None else is_cond
        if not is_cond and frame_idx in batch.bank.cond:
            # As released: the masks update the conditioning entry in place (pointers, scores, low-res masks);
            # the non-conditioning output its consolidation makes is dropped again, as a frame cannot be both.
            batch.bank.cond[frame_idx] = entry
            return
        batch.bank.add(frame_idx, entry, is_cond)
        if is_cond:
            batch.bank.non_cond.pop(frame_idx, None)
        pend = batch.pending.setdefault(frame_idx, PendingFrame(is_cond))
        # A new mask takes its pixels from the masks prompted on this frame before it (and from each other).
        for k, (i, v) in enumerate(zip(idx, video)):
            others = torch.cat([video[:k], video[k + 1 :]]).any(dim=0) if len(idx) > 1 else None
            logits = torch.where(v[None], -NO_OBJ_SCORE, NO_OBJ_SCORE)
            pend.video_masks[i] = logits if others is None else torch.where(others[None], NO_OBJ_SCORE, logits)
        union = video.any(dim=0)[None]
        for j, old in pend.video_masks.items():
            if j not in idx:
                pend.video_masks[j] = torch.where(union, NO_OBJ_SCORE, old)

    def batch_for_new_object(
        self, batches: list[MultiplexBatch], frame_idx: int, num_frames: int, video_hw: tuple[int, int]
    ) -> MultiplexBatch:
        """Where a clicked new object goes: a tracker state of its own, as released (not yet in ``batches``)."""
        return self.new_batch(num_frames, video_hw)

    def add_points(
        self,
        batch: MultiplexBatch,
        frame_idx: int,
        obj_id: int,
        coords: torch.Tensor,
        labels: torch.Tensor,
        feats: MultiplexFeatures,
        use_prev_mem_frame: bool = False,
    ) -> torch.Tensor:
        """Clicks (P, 2) in model-input pixels with labels (P,) for one object; returns its (1, 1, 4g, 4g) logits.

        A new object starts a state of its own, as released: the interactive heads segment it from the clicks
        (no memory), and that prediction (logits, pointer, score) is the state's conditioning entry on the frame.
        An object already tracked is segmented by the interactive heads fed its earlier logits on this frame as a
        mask prompt, and the binarised result re-anchors it like a mask (a state that never saw the frame is first
        propagated onto it); the released code instead moves it into a state of its own first (not done here).
        ``use_prev_mem_frame`` is accepted for the common interface; clicks never read the memory here."""
        device = feats.interactive.image.device
        coords = upload(coords.reshape(1, -1, 2).float(), device)
        labels = upload(labels.reshape(1, -1).to(torch.int32), device)
        if coords.shape[1] > 16:  # the first 8 and last 8 clicks reach the prompt encoder
            coords = torch.cat([coords[:, :8], coords[:, -8:]], dim=1)
            labels = torch.cat([labels[:, :8], labels[:, -8:]], dim=1)
        points = PointInputs(coords, labels)
        low = self._segment_clicks(batch, frame_idx, obj_id, points, feats)
        # As released, after a click the state forgets its mask-only prompts (detections, re-anchorings) and
        # reads back only clicked frames: the others are computed again when propagated.
        for o in batch.obj_ids:
            batch.mask_inputs[o] = {t: m for t, m in batch.mask_inputs[o].items() if t in batch.point_inputs[o]}
        prompted = {t for o in batch.obj_ids for t in (*batch.point_inputs[o], *batch.mask_inputs[o])}
        prompted -= set(batch.pending)
        batch.consolidated_cond = {t for t in prompted if t in batch.bank.cond}
        batch.consolidated_non_cond = prompted - batch.consolidated_cond
        return low

    def _segment_clicks(
        self, batch: MultiplexBatch, frame_idx: int, obj_id: int, points: PointInputs, feats: MultiplexFeatures
    ) -> torch.Tensor:
        multimask = points.num_points <= self.tracker.config.tracker.multimask_max_points
        if not batch.obj_ids:
            return self._start_with_points(batch, frame_idx, obj_id, points, feats, multimask)
        if batch.obj_ids == [obj_id] and frame_idx not in batch.refined_frames:
            # the first clicks on a frame for an object alone in its state segment it afresh, as released
            batch.refined_frames.add(frame_idx)
            batch.bank.non_cond.pop(frame_idx, None)
            batch.consolidated_non_cond.discard(frame_idx)
            batch.obj_ids.clear()
            batch.state = MultiplexState(self.multiplex_count)
            return self._start_with_points(batch, frame_idx, obj_id, points, feats, multimask, keep_inputs=True)
        if batch.bank.get(frame_idx) is None:
            self.track(batch, frame_idx, False, feats, run_mem_encoder=False)
        entry = batch.bank.get(frame_idx)
        prev = None
        if obj_id in batch.obj_ids and entry is not None:
            prev = entry.pred_masks[batch.index_of(obj_id) : batch.index_of(obj_id) + 1].clamp(-32.0, 32.0)
        low, _, _, _ = self.tracker.interactive_heads(feats, points, prev, multimask)
        big = F.interpolate(low, size=(self.input_mask_size,) * 2, mode="bilinear", align_corners=False)[:, 0] > 0
        self.add_masks(batch, frame_idx, [obj_id], big, feats, is_cond=True)
        batch.point_inputs[obj_id][frame_idx] = points
        batch.mask_inputs[obj_id].pop(frame_idx, None)
        return low

    def _start_with_points(
        self,
        batch: MultiplexBatch,
        frame_idx: int,
        obj_id: int,
        points: PointInputs,
        feats,
        multimask: bool,
        keep_inputs: bool = False,
    ) -> torch.Tensor:
        low, _, ptr, score = self.tracker.interactive_heads(feats, points, None, multimask)
        batch.state.add_objects(1)
        batch.obj_ids.append(obj_id)
        if not keep_inputs:
            batch.point_inputs[obj_id], batch.mask_inputs[obj_id] = {}, {}
        batch.point_inputs[obj_id][frame_idx] = points
        batch.mask_inputs[obj_id].pop(frame_idx, None)
        is_cond = keep_inputs or frame_idx not in batch.tracked_frames
        batch.bank.add(frame_idx, MultiplexFrame(low, score, batch.state.mux(ptr), frozenset({0})), is_cond)
        # as released, the consolidation reads the prediction back from the video size
        video = F.interpolate(low, size=batch.video_hw, mode="bilinear", align_corners=False)
        batch.pending[frame_idx] = PendingFrame(is_cond, {0: video})
        return low

    def clear_prompts_on_frame(self, batch: MultiplexBatch, frame_idx: int) -> None:
        """Remove every object's prompt on a frame, downgrading it to an ordinary tracked frame."""
        for obj_id in batch.obj_ids:
            batch.point_inputs[obj_id].pop(frame_idx, None)
            batch.mask_inputs[obj_id].pop(frame_idx, None)
        batch.pending.pop(frame_idx, None)
        self._downgrade_frame(batch, frame_idx)

    # ---------------------------------------------------------------- consolidation
    def consolidate(self, batch: MultiplexBatch, features_of) -> None:
        """Merge every pending frame into the bank and encode its memory (``features_of(frame)`` gives the
        frame's :class:`MultiplexFeatures`)."""
        for t in sorted(batch.pending):
            pend = batch.pending.pop(t)
            entry = batch.bank.cond[t] if pend.is_cond else batch.bank.non_cond[t]
            masks = entry.pred_masks
            if masks.shape[-2:] != (self.low_res, self.low_res):
                masks = _resize(masks, (self.low_res, self.low_res), antialias=masks.shape[-1] > self.low_res)
            masks = masks.clone()
            for i, video in pend.video_masks.items():
                masks[i : i + 1] = _resize(video, (self.low_res, self.low_res), antialias=True)
            entry = replace(entry, pred_masks=masks)
            high = F.interpolate(masks, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
            head = features_of(t).propagation
            feats, pos = self.tracker.encode_memory(
                head, batch.state, non_overlap(high), entry.object_score_logits, entry.conditioning
            )
            entry = entry.with_memory(quantize_memory(feats), pos, head)
            batch.bank.add(t, entry, pend.is_cond)
            (batch.consolidated_cond if pend.is_cond else batch.consolidated_non_cond).add(t)
            if pend.is_cond:
                batch.consolidated_non_cond.discard(t)

    # ---------------------------------------------------------------- propagation
    def track(
        self, batch: MultiplexBatch, frame_idx: int, reverse: bool, feats: MultiplexFeatures, run_mem_encoder: bool
    ):
        """One frame of one state: its stored entry on prompted frames, else the multiplexed decoder's output
        (stored as the frame's memory entry, encoded when ``run_mem_encoder``). -> the frame's entry."""
        batch.tracked_frames[frame_idx] = reverse
        if frame_idx in batch.consolidated_cond:
            return batch.bank.cond[frame_idx]
        if frame_idx in batch.consolidated_non_cond:
            return batch.bank.non_cond[frame_idx]
        out = self.tracker.propagate(frame_idx, feats, batch.state, batch.bank, batch.num_frames, reverse)
        entry = MultiplexFrame(out.low_res_masks, out.object_score_logits, batch.state.mux(out.obj_ptr), frozenset())
        if run_mem_encoder:
            f, pos = self.tracker.encode_memory(
                feats.propagation, batch.state, out.high_res_masks, out.object_score_logits, entry.conditioning
            )
            entry = entry.with_memory(quantize_memory(f), pos, feats.propagation)
        batch.bank.non_cond[frame_idx] = entry
        return entry

    def step_many(
        self,
        batches: list[MultiplexBatch],
        frame_idx: int,
        reverse: bool,
        feats: MultiplexFeatures,
        run_mem_encoder: bool = False,
    ) -> TrackedFrame:
        """Every object of every state on one frame, rows in id order (one host read for the scores)."""
        ids, masks, scores = [], [], []
        for batch in batches:
            if not batch.bank.cond:
                raise ValueError("the tracker state has no prompted frame to track from")
            entry = self.track(batch, frame_idx, reverse, feats, run_mem_encoder)
            ids += batch.obj_ids
            masks.append(entry.pred_masks)
            scores.append(entry.object_score_logits)
        order = sorted(range(len(ids)), key=ids.__getitem__)
        masks_t, scores_t = torch.cat(masks)[order], torch.cat(scores)[order]
        return TrackedFrame(masks_t, scores_t.reshape(-1).tolist())

    def store_memories(
        self,
        batches: list[MultiplexBatch],
        frame_idx: int,
        high_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        feats: MultiplexFeatures,
    ) -> None:
        """Encode (N, 1, h, w) mask logits (rows in id order, as :meth:`step_many` gives them) as this frame's
        memory for every state."""
        row = {i: k for k, i in enumerate(self.row_ids(batches))}
        for batch in batches:
            rows = upload([row[i] for i in batch.obj_ids], high_res_masks.device)
            entry = batch.bank.get(frame_idx)
            f, pos = self.tracker.encode_memory(
                feats.propagation, batch.state, high_res_masks[rows], object_score_logits[rows], entry.conditioning
            )
            batch.bank.add(
                frame_idx, entry.with_memory(quantize_memory(f), pos, feats.propagation), frame_idx in batch.bank.cond
            )

    # ---------------------------------------------------------------- removal
    def remove_object(self, batch: MultiplexBatch, obj_id: int) -> None:
        """Forget one object everywhere in the state: its slot is freed (a bucket left empty is dropped with its
        memories) and the other objects keep their slots. A frame only it prompted stops being a
        conditioning frame; with no conditioning frame left the state forgets every memory."""
        if obj_id not in batch.obj_ids:
            return
        k = batch.index_of(obj_id)
        keep_rows = [i for i in range(len(batch.obj_ids)) if i != k]
        kept_buckets = batch.state.remove_objects([k])
        renumber = {old: new for new, old in enumerate(keep_rows)}
        for store in (batch.bank.cond, batch.bank.non_cond):
            for t, e in list(store.items()):
                rows = [i for i in keep_rows if i < e.num_objects]  # a frame remembers the objects it had then
                store[t] = replace(
                    e,
                    pred_masks=e.pred_masks[rows],
                    object_score_logits=e.object_score_logits[rows],
                    obj_ptr=e.obj_ptr[kept_buckets],
                    conditioning=frozenset(renumber[i] for i in e.conditioning if i in renumber),
                    maskmem_features=None if e.maskmem_features is None else e.maskmem_features[kept_buckets],
                    maskmem_pos=None if e.maskmem_pos is None else e.maskmem_pos[kept_buckets],
                )
        prompted = set(batch.point_inputs.pop(obj_id, {})) | set(batch.mask_inputs.pop(obj_id, {}))
        batch.obj_ids.remove(obj_id)
        for t in prompted:
            if not any(t in batch.point_inputs[o] or t in batch.mask_inputs[o] for o in batch.obj_ids):
                self._downgrade_frame(batch, t)
        for pend in batch.pending.values():
            pend.video_masks = {renumber[i]: v for i, v in pend.video_masks.items() if i in renumber}

    def _downgrade_frame(self, batch: MultiplexBatch, frame_idx: int) -> None:
        batch.consolidated_cond.discard(frame_idx)
        batch.consolidated_non_cond.discard(frame_idx)
        entry = batch.bank.cond.pop(frame_idx, None)
        if entry is not None:
            batch.bank.non_cond[frame_idx] = entry
            batch.tracked_frames.pop(frame_idx, None)
        if not batch.bank.cond:
            batch.bank = MemoryBank()
            batch.consolidated_non_cond.clear()
            batch.tracked_frames.clear()
            batch.pending.clear()


def _resize(x: torch.Tensor, size, antialias: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x.float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias)
