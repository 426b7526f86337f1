"""One frame of detect-then-track (spec §5.2): detect, propagate the tracks, associate, apply the
heuristics, update memories, add new tracks, build the frame's masks.

The engine is stateless; everything lives in the :class:`VideoSession` it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sam3.device import upload
from sam3.inference.association import (
    ALWAYS_OCCLUDED,
    NEVER_OCCLUDED,
    boundary_keep,
    nms_masks_each,
    NO_OBJ_LOGIT,
    REMOVED_SCORE,
    Association,
    TrackingHeuristics,
    associate_detections,
    nms_masks,
    occlusion_suppression,
    process_hotstart,
    process_hotstart_multiplex,
)
from sam3.inference.frame_output import frame_output
from sam3.inference.multiplex_tracklets import MultiplexRunner
from sam3.inference.tracklets import TrackletBatch, TrackletRunner, non_overlap
from sam3.inference.video_io import normalise_frame
from sam3.inference.video_state import (
    Detections,
    FrameFeatures,
    FrameResult,
    VideoSession,
)
from sam3.modeling.outputs import GeometricPrompt, TextFeatures
from sam3.modeling.sam3_model import Sam3Model
from sam3.ops.boxes import box_cxcywh_to_xyxy
from sam3.ops.masks import fill_holes_in_mask_scores

VISUAL_TEXT = "visual"  # the text paired with box-only prompts


def sigmoid32(logits: list[float]) -> list[float]:
    """The sigmoid of host logits in float32 (the device's float32 sigmoid within an ulp), without a read."""
    x = np.asarray(logits, np.float32)
    return (1 / (1 + np.exp(-x))).tolist()


@dataclass
class FrameOutcome:
    """Raw per-frame result before hiding removed / suppressed objects."""

    frame_idx: int
    masks: dict[int, torch.Tensor]  # id -> (1, H, W) bool
    removed: set[int]
    suppressed: set[int]
    scores: dict[int, float] | None = None  # SAM 3.1: the objects' scores as of this frame (a later removal
    # sets an object's score to -1e4, and a held-back frame still shows it with the score it had)


class DetectTrackEngine:
    """Runs the per-frame algorithm with a :class:`Sam3Model` that has a tracker."""

    def __init__(
        self,
        model: Sam3Model,
        heuristics: TrackingHeuristics | None = None,
        memory_frames: int = 0,
        bucket_objects: bool = True,
    ):
        if model.tracker is None:
            raise ValueError("video tracking needs a model built with the tracker (enable_inst_interactivity=True)")
        self.model = model
        self.multiplex = getattr(model, "version", "sam3") == "sam3.1"
        self.cfg = heuristics or (TrackingHeuristics.sam31() if self.multiplex else TrackingHeuristics())
        # SAM 3.1: objects share buckets of the multiplexed tracker; SAM 3: one batch per frame objects appear
        # on, their count padded to 1, 2, 4, 8, ... when ``bucket_objects``
        self.runner = (
            MultiplexRunner(model.tracker.model) if self.multiplex else TrackletRunner(model.tracker, bucket_objects)
        )
        self.input_mask_size = model.config.input_mask_size
        self.memory_frames = memory_frames  # memory-bank window (``MemoryBank.prune``); 0 keeps every frame

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ---------------------------------------------------------------- features and detection
    def frame_features(self, session: VideoSession, frame_idx: int) -> FrameFeatures:
        cached = session.features.get(frame_idx)
        if cached is None:
            video = session.video  # uint8 up (half the bytes of fp16; pinned on CUDA), normalised on the device
            image = normalise_frame(upload(video.pixels(frame_idx), self.device), video.mean, video.std)
            image = image.float().unsqueeze(0)
            # one trunk pass; the detector neck waits until a detection asks for it
            trunk = self.model.encode_trunk(image)
            levels = self.model.tracker_levels(trunk)  # SAM 3.1: the interactive head's
            pos = self.model.level_encodings(levels)
            if self.multiplex:
                tracker = self.runner.prepare_features(levels, self.model.propagation_levels(trunk), pos)
            else:
                tracker = self.model.tracker.prepare_features(levels, pos)
            cached = FrameFeatures(tracker, trunk=trunk)
            session.features[frame_idx] = cached
        return cached

    def text_features(self, session: VideoSession, placeholder_for_boxes: bool = False):
        """Features of [text or placeholder, "visual"], cached for the session's current text. A box-only concept
        reads "visual" (SAM 3), or the placeholder with ``placeholder_for_boxes`` (SAM 3.1)."""
        key = (session.text or "<text placeholder>", VISUAL_TEXT)
        if key not in session.text_cache:
            session.text_cache.clear()
            session.text_cache[key] = self.model.encode_text(list(key))
        feats = session.text_cache[key]
        row = 0 if session.text is not None or placeholder_for_boxes else 1
        return TextFeatures(feats.features[row : row + 1], feats.mask[row : row + 1])

    def visit_frame(self, session: VideoSession, frame_idx: int, reverse: bool) -> int:
        """Record a visit of the detector to ``frame_idx``; returns the frame whose box prompt it uses there.

        As released, the detector works one frame ahead (its multi-GPU prefetch): on frame t it also
        computes frame t+1 (t-1 in reverse) -- with frame t's prompt -- and keeps that output until it is
        read or evicted, even if the next request starts elsewhere. So a box prompt on frame t also reaches
        the detections of the frame after it. We keep which prompt each frame got, evicted as released, but
        compute a frame's detections only when they are read (same inputs, same result), and keep them
        while the frame stays in that window (a propagation starts by re-reading the prompted frame).
        """
        src = session.detector_prompt_frame
        used = src.setdefault(frame_idx, frame_idx)
        behind = frame_idx + 1 if reverse else frame_idx - 1
        src.pop(behind, None)
        session.detections.pop(behind, None)
        ahead = frame_idx - 1 if reverse else frame_idx + 1
        if 0 <= ahead < session.num_frames:
            src.setdefault(ahead, frame_idx)
        # keep only this frame and the next one's features (the previous one is no longer needed)
        session.features.pop(frame_idx + 1 if reverse else frame_idx - 1, None)
        return used

    def detect(
        self, session: VideoSession, frame_idx: int, reverse: bool, allow_new: bool, prompted: bool = False
    ) -> Detections:
        """The frame's detections above the score threshold (none when new detections are not allowed).
        ``prompted``: the frame of a text / box request (SAM 3.1 detects it differently from propagated ones)."""
        if self.multiplex:
            return self._detect_multiplex(session, frame_idx, reverse, allow_new, prompted)
        prompt_frame = self.visit_frame(session, frame_idx, reverse)
        every = session.detections.get(frame_idx)
        if every is None:
            every = session.detections[frame_idx] = self._ground(session, frame_idx, prompt_frame)
        probs = every.scores
        if not allow_new:
            probs = probs - 1e8
        host = probs.float().cpu().numpy()  # the one read: which queries pass, and their scores
        rows = np.flatnonzero(host > self.cfg.score_threshold_detection)
        index = upload(rows, probs.device)
        return Detections(
            every.boxes.index_select(0, index), every.masks.index_select(0, index), probs[index], host[rows]
        )

    def _ground(self, session: VideoSession, frame_idx: int, prompt_frame: int) -> Detections:
        """Every query of the detector on a frame, with the box prompt of ``prompt_frame``; queries removed
        by the mask NMS get their logit lowered by 1e4 (as released)."""
        feats = self.frame_features(session, frame_idx)
        prompt = session.visual_prompt.get(prompt_frame) or GeometricPrompt.empty(1, self.device)
        out = self.model.detector.forward_grounding(
            feats.detector_features(self.model), self.text_features(session), prompt, joint_scores=True
        )
        logits = out.pred_logits[0].clone()  # (Q,)
        masks = out.pred_masks[0]
        if self.cfg.det_nms_thresh > 0:
            keep = nms_masks(logits.sigmoid(), masks, self.cfg.score_threshold_detection, self.cfg.det_nms_thresh)
            logits = logits - 1e4 * (~keep).float()
        return Detections(box_cxcywh_to_xyxy(out.pred_boxes[0]), masks, logits.sigmoid())

    def _detect_multiplex(
        self, session: VideoSession, frame_idx: int, reverse: bool, allow_new: bool, prompted: bool
    ) -> Detections:
        """SAM 3.1's detection, as released: the prompted frame with its box prompt and an NMS in which every
        detection suppresses the ones it overlaps (``nms_masks_each``); propagated frames with the text alone
        (a box-only concept keeps the text placeholder) and a greedy NMS. Detections near the frame's edge are
        dropped; the kept ones come in the order of ``keep.argsort(descending=True)`` (which decides new ids).
        ``allow_new`` is not read: SAM 3.1 detects on every frame, also for a box-only concept."""
        session.features.pop(frame_idx + 1 if reverse else frame_idx - 1, None)
        feats = self.frame_features(session, frame_idx)
        box = session.visual_prompt.get(frame_idx) if prompted else None
        text = self.text_features(session, placeholder_for_boxes=True)
        out = self.model.detector.forward_grounding(
            feats.detector_features(self.model), text, box or GeometricPrompt.empty(1, self.device), joint_scores=True
        )
        logits, masks = out.pred_logits[0].clone(), out.pred_masks[0]
        cfg = self.cfg
        if cfg.det_nms_thresh > 0:
            nms = nms_masks_each if prompted else nms_masks
            keep = nms(logits.sigmoid(), masks, cfg.score_threshold_detection, cfg.det_nms_thresh, cfg.det_nms_use_iom)
            logits = logits - 1e4 * (~keep).float()
        probs, boxes = logits.sigmoid(), box_cxcywh_to_xyxy(out.pred_boxes[0])
        pos = probs > cfg.score_threshold_detection
        if cfg.suppress_det_close_to_boundary:
            pos = pos & boundary_keep(boxes)
        order = pos.argsort(descending=True)  # the passing queries first, in the device sort's order
        host = torch.cat([probs.float(), pos.float(), order.float()]).cpu().numpy()  # the one read
        q = probs.shape[0]
        count = int(host[q : 2 * q].sum())
        rows = order[:count]
        scores = host[:q][host[2 * q :][:count].astype(np.int64)]
        return Detections(boxes.index_select(0, rows), masks.index_select(0, rows), probs[rows], scores)

    # ---------------------------------------------------------------- tracker steps
    def propagate_tracks(
        self, session: VideoSession, frame_idx: int, reverse: bool
    ) -> tuple[torch.Tensor, list[float]]:
        """Every batch one frame on -> (N, 4g, 4g) logits (holes filled) and the N object-score logits (host)."""
        feats = self.frame_features(session, frame_idx).tracker
        batches = [b for b in session.batches if b.obj_ids]
        size = self.model.config.low_res_mask_size
        if not batches:
            return torch.zeros(0, size, size, device=self.device), []
        tracked = self.runner.step_many(batches, frame_idx, reverse, feats)
        low = fill_holes_in_mask_scores(tracked.masks, self.cfg.fill_hole_area)[:, 0]
        return low, tracked.scores

    def track_objects(
        self, session: VideoSession, frame_idx: int, reverse: bool, batches: list[TrackletBatch], obj_ids
    ) -> dict[int, tuple[torch.Tensor, float]]:
        """Tracker-only step of a partial propagation: ``batches`` one frame on, each encoding its own
        predictions as memory; no detection, no heuristics. -> id -> ((4g, 4g) logits with holes filled,
        object-score logit) for the objects of ``obj_ids``."""
        self.visit_frame(session, frame_idx, reverse)  # the released code runs the detector here too
        feats = self.frame_features(session, frame_idx).tracker
        tracked = self.runner.step_many(batches, frame_idx, reverse, feats, run_mem_encoder=True)
        low = fill_holes_in_mask_scores(tracked.masks, self.cfg.fill_hole_area)[:, 0].unbind(0)
        rows = self.runner.row_ids(batches)
        return {i: (low[k], tracked.scores[k]) for k, i in enumerate(rows) if i in obj_ids}

    def add_new_objects(self, session: VideoSession, frame_idx: int, obj_ids: list[int], masks: torch.Tensor) -> None:
        """Start tracking objects first seen on this frame, from (N, 4g, 4g) detection logits (SAM 3: a batch of
        their own; SAM 3.1: the tracker state whose free slots fit them most tightly, else a new one)."""
        feats = self.frame_features(session, frame_idx).tracker
        big = (
            F.interpolate(masks[:, None], size=(self.input_mask_size,) * 2, mode="bilinear", align_corners=False)[:, 0]
            > 0
        )
        batch = self.runner.best_fit(session.batches, len(obj_ids)) if self.multiplex else None
        if batch is None:
            batch = self.runner.new_batch(session.num_frames, session.video_hw)
            session.batches.append(batch)
        if self.multiplex:
            self.runner.add_masks(batch, frame_idx, list(obj_ids), big, feats)
        else:
            for obj_id, mask in zip(obj_ids, big):
                self.runner.add_mask(batch, frame_idx, obj_id, mask, feats)
        self.runner.consolidate(batch, lambda t: self.frame_features(session, t).tracker)

    def prune_memory(self, session: VideoSession, frame_idx: int) -> None:
        """Keep in every batch's memory bank only what the tracker can still read (``MemoryBank.prune``)."""
        if self.memory_frames <= 0:
            return
        for batch in session.batches:
            batch.bank.prune(frame_idx, self.memory_frames, session.anchor_frames, batch.consolidated_non_cond)

    def remove_objects(self, session: VideoSession, obj_ids) -> None:
        for obj_id in obj_ids:
            for batch in session.batches:
                self.runner.remove_object(batch, obj_id)
        session.batches = [b for b in session.batches if b.obj_ids]

    def recondition(
        self,
        session: VideoSession,
        frame_idx: int,
        dets: Detections,
        assoc: Association,
        trk_scores: list[float],
        trk_ids: list[int],
    ) -> None:
        """Re-anchor confident tracks on matching high-confidence detections (every n-th frame). ``trk_scores``:
        the tracks' object-score logits (as released, compared with ``high_conf_thresh`` as they are)."""
        feats = self.frame_features(session, frame_idx).tracker
        touched: list[TrackletBatch] = []
        for trk_id, d in assoc.trk_to_high_conf_det.items():
            mask = (
                F.interpolate(
                    dets.masks[d : d + 1, None], size=(self.input_mask_size,) * 2, mode="bilinear", align_corners=False
                )[0, 0]
                > 0
            )
            score = trk_scores[trk_ids.index(trk_id)]
            for batch in session.batches:
                if trk_id in batch.obj_ids and score > self.cfg.high_conf_thresh:
                    self.runner.add_mask(batch, frame_idx, trk_id, mask, feats)
                    if batch not in touched:
                        touched.append(batch)
        for batch in touched:
            self.runner.consolidate(batch, lambda t: self.frame_features(session, t).tracker)

    def recondition_merge(
        self,
        session: VideoSession,
        frame_idx: int,
        dets: Detections,
        assoc: Association,
        trk_logits: list[float],
        trk_ids: list[int],
        low_res: torch.Tensor,
    ) -> None:
        """SAM 3.1's re-anchoring: a confident track (sigmoid score above ``high_conf_thresh``) paired with a
        confident detection keeps its (N, 4g, 4g) logits where their masks agree and takes the detection's
        elsewhere (in ``low_res``, in place: the frame's output and memory); each tracker state is re-anchored on
        the detections' masks of its objects in one call."""
        pairs = list(assoc.trk_to_high_conf_det.items())
        if not pairs:
            return
        index = [trk_ids.index(t) for t, _ in pairs]
        probs = sigmoid32([trk_logits[k] for k in index])
        confident = [k for k, p in enumerate(probs) if p > self.cfg.high_conf_thresh]
        if not confident:
            return
        pairs = [pairs[k] for k in confident]
        rows = upload([index[k] for k in confident], low_res.device)
        new = dets.masks[upload([d for _, d in pairs], dets.masks.device)]
        size = (self.input_mask_size,) * 2
        big = F.interpolate(new[:, None], size=size, mode="bilinear", align_corners=False)[:, 0] > 0
        old = low_res[rows]
        merged = torch.where((new > 0) == (old > 0), old, new.to(old.dtype))
        low_res[rows] = fill_holes_in_mask_scores(merged[:, None], self.cfg.fill_hole_area)[:, 0]
        feats = self.frame_features(session, frame_idx).tracker
        for batch in session.batches:
            mine = [k for k, (t, _) in enumerate(pairs) if t in batch.obj_ids]
            if mine:
                self.runner.add_masks(batch, frame_idx, [pairs[k][0] for k in mine], big[mine], feats)
                self.runner.consolidate(batch, lambda t: self.frame_features(session, t).tracker)

    def update_memories(self, session: VideoSession, frame_idx: int, low_res: torch.Tensor) -> None:
        """Encode this frame's (N, 4g, 4g) track masks as memory, after the pixel-wise non-overlap rule."""
        high = F.interpolate(low_res[:, None], size=(self.input_mask_size,) * 2, mode="bilinear", align_corners=False)
        constrained = non_overlap(high)
        before = (high > 0).sum(dim=(-1, -2)).clamp(min=1)
        after = (constrained > 0).sum(dim=(-1, -2))
        shrunk = (after / before) < 0.3  # a mask that lost most of its area to others is dropped entirely
        high = torch.where(shrunk[..., None, None], high.clamp(max=-10.0), high)
        obj_scores = torch.where((high > 0).any(dim=(-1, -2)), 10.0, -10.0)
        feats = self.frame_features(session, frame_idx).tracker
        batches = [b for b in session.batches if b.obj_ids]
        self.runner.store_memories(batches, frame_idx, high, obj_scores, feats)

    # ---------------------------------------------------------------- one frame
    def run_frame(self, session: VideoSession, frame_idx: int, reverse: bool, prompted: bool = False) -> FrameOutcome:
        """One frame of detect-then-track; ``prompted`` for the frame of a text / box request."""
        reg = session.objects
        allow_new = session.text is not None or frame_idx in session.visual_prompt
        dets = self.detect(session, frame_idx, reverse, allow_new, prompted)
        low_res, trk_logits = self.propagate_tracks(session, frame_idx, reverse)  # logits on the host
        prev_ids = self.runner.row_order(reg.obj_ids)
        det_scores = dets.host_scores

        assoc = associate_detections(dets.masks, det_scores, low_res, np.array(prev_ids, np.int64), self.cfg)
        new_idx = assoc.new_det_indices
        if len(prev_ids) + len(new_idx) > self.cfg.max_num_objects:
            room = max(self.cfg.max_num_objects - len(prev_ids), 0)
            # the most confident ones, in that order (as released: it decides which ids they get)
            new_idx = new_idx[np.argsort(det_scores[new_idx])[::-1][:room]]
        new_ids = reg.max_obj_id + 1 + np.arange(len(new_idx))
        if self.cfg.masklet_confirmation_enable:
            removed_now = process_hotstart_multiplex(
                reg.hotstart, frame_idx, reverse, assoc, prev_ids, new_ids, self.cfg
            )
        else:
            removed_now = process_hotstart(reg.hotstart, frame_idx, reverse, assoc, new_ids, self.cfg)

        if (
            self.cfg.recondition_every_nth_frame > 0
            and frame_idx % self.cfg.recondition_every_nth_frame == 0
            and assoc.trk_to_high_conf_det
        ):
            if self.multiplex:
                self.recondition_merge(session, frame_idx, dets, assoc, trk_logits, prev_ids, low_res)
            else:
                self.recondition(session, frame_idx, dets, assoc, trk_logits, prev_ids)

        last_occluded_new: dict[int, torch.Tensor] = {}
        if low_res.shape[0] > 0:
            binary = low_res > 0
            last = torch.cat(
                [
                    reg.last_occluded.get(
                        i,
                        torch.full(
                            (1,),
                            ALWAYS_OCCLUDED if i in removed_now else NEVER_OCCLUDED,
                            dtype=torch.long,
                            device=low_res.device,
                        ),
                    )
                    for i in prev_ids
                ]
            )
            to_suppress = occlusion_suppression(binary, last, reverse, self.cfg.occlusion_suppress_iou)
            occluded = ~binary.flatten(1).any(1) | to_suppress
            last = last.clone()
            last[occluded] = frame_idx
            last_occluded_new = {i: last[k : k + 1] for k, i in enumerate(prev_ids)}
            low_res[to_suppress] = NO_OBJ_LOGIT  # in place: this frame's output hides them too
            self.update_memories(session, frame_idx, low_res)

        # bookkeeping of ids and scores
        reg.obj_ids = [i for i in prev_ids + new_ids.tolist() if i not in removed_now]
        frame_scores = reg.tracker_score[frame_idx]
        for k, i in zip(new_idx.tolist(), new_ids.tolist()):
            reg.score[i] = float(det_scores[k])
            frame_scores[i] = float(det_scores[k])
        if len(new_ids):
            reg.max_obj_id = max(reg.max_obj_id, int(new_ids.max()))
        reg.last_occluded = last_occluded_new
        for i in removed_now:
            reg.score[i] = REMOVED_SCORE
            frame_scores[i] = REMOVED_SCORE
            reg.last_occluded.pop(i, None)

        if len(new_idx):
            self.add_new_objects(
                session, frame_idx, new_ids.tolist(), dets.masks[upload(new_idx, dets.masks.device, torch.long)]
            )
        if removed_now:
            self.remove_objects(session, removed_now)

        masks = self.output_masks(session, low_res, prev_ids, dets, new_idx, new_ids)
        for i, s in zip(prev_ids, sigmoid32(trk_logits)):
            frame_scores[i] = s
        session.frames_with_outputs.add(frame_idx)
        scores = dict(reg.score) if self.cfg.masklet_confirmation_enable else None
        return FrameOutcome(frame_idx, masks, set(reg.hotstart.removed), set(reg.suppressed[frame_idx]), scores)

    def output_masks(self, session, low_res, prev_ids, dets: Detections, new_idx, new_ids) -> dict[int, torch.Tensor]:
        h, w = session.video_hw
        out: dict[int, torch.Tensor] = {}
        if low_res.shape[0]:
            up = F.interpolate(low_res[:, None], size=(h, w), mode="bilinear", align_corners=False) > 0
            out.update({i: m for i, m in zip(prev_ids, up)})
        if len(new_idx):
            det = dets.masks[upload(new_idx, dets.masks.device, torch.long)][:, None]
            det = fill_holes_in_mask_scores(det, self.cfg.fill_hole_area)
            up = F.interpolate(det, size=(h, w), mode="bilinear", align_corners=False) > 0
            out.update({i: m for i, m in zip(new_ids.tolist(), up)})
        return out

    # ---------------------------------------------------------------- results
    def build_result(
        self,
        session: VideoSession,
        frame_idx: int,
        masks: dict[int, torch.Tensor],
        hidden: set[int],
        store: bool = False,
        scores: dict[int, float] | None = None,
    ) -> FrameResult:
        """Sorted ids, empty and hidden objects dropped, overlaps given to the most confident object
        (``frame_output``: one device-to-host transfer). With ``store``, the visible objects' masks become
        the frame's stored output. ``scores``: the objects' scores to report (default: the current ones)."""
        result, raw = frame_output(
            frame_idx,
            masks,
            hidden,
            session.objects.tracker_score.get(frame_idx, {}),
            session.objects.score if scores is None else scores,
            session.video_hw,
            self.device,
        )
        if store:
            session.store_masks(frame_idx, raw)
        return result
