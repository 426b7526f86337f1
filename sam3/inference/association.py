"""Detect-then-track heuristics: detection NMS, detection/track association, hot-start removal,
occlusion-based overlap suppression.

Pure functions and small typed records; the video predictor owns the state and calls them per frame.
Thresholds and constants are those of the released video model (spec §1.2, §5.2).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from sam3.device import upload


@dataclass(frozen=True)
class TrackingHeuristics:
    """The released model's detect-then-track settings (temporal disambiguation on)."""

    score_threshold_detection: float = 0.5
    det_nms_thresh: float = 0.1
    assoc_iou_thresh: float = 0.1
    trk_assoc_iou_thresh: float = 0.5
    new_det_thresh: float = 0.7
    hotstart_delay: int = 15
    hotstart_unmatch_thresh: int = 8
    hotstart_dup_thresh: int = 8
    init_trk_keep_alive: int = 30
    max_trk_keep_alive: int = 30
    min_trk_keep_alive: int = -1
    occlusion_suppress_iou: float = 0.7
    fill_hole_area: int = 16
    recondition_every_nth_frame: int = 16
    max_num_objects: int = 10000
    high_conf_thresh: float = 0.8
    high_iou_thresh: float = 0.8
    refinement_cond_frame_removal_window: int = 16
    # SAM 3.1's rules (off for SAM 3; the names of the released constructor arguments where there is one):
    det_nms_use_iom: bool = False  # the detection NMS compares masks by IoM (intersection over the smaller area)
    use_iom_recondition: bool = False  # every association test uses IoM, re-anchoring from iom_thresh_recondition
    iom_thresh_recondition: float = 0.8
    suppress_det_close_to_boundary: bool = False  # drop detections whose box centre is within 2.5% of an edge
    masklet_confirmation_enable: bool = False  # SAM 3.1's hot start: see process_hotstart_multiplex
    exclusive_reanchor: bool = False  # SAM 3.1's association: a detection or track above the re-anchoring
    # threshold with more than one partner is re-anchored to none (and matches none); the re-anchored track keeps
    # its own mask where it agrees with the detection's and takes the detection's logits elsewhere; without any
    # track, new objects still need new_det_thresh

    @classmethod
    def sam31(cls) -> TrackingHeuristics:
        """SAM 3.1's settings, as ``build_sam3_multiplex_video_predictor`` passes them: a lower detection
        threshold, IoM for the NMS, the association and the re-anchoring (from 0.5), boundary suppression, new
        objects from 0.65, keep-alive counters 0 / 8 / -4, no hole filling, its hot start with masklet confirmation
        (``process_hotstart_multiplex``). Not applied here: the 16-object cap."""
        return cls(
            score_threshold_detection=0.4,
            new_det_thresh=0.65,
            init_trk_keep_alive=0,
            max_trk_keep_alive=8,
            min_trk_keep_alive=-4,
            fill_hole_area=0,
            det_nms_use_iom=True,
            use_iom_recondition=True,
            iom_thresh_recondition=0.5,
            suppress_det_close_to_boundary=True,
            exclusive_reanchor=True,
            masklet_confirmation_enable=True,
        )


NEVER_OCCLUDED = -1
ALWAYS_OCCLUDED = 100000
NO_OBJ_LOGIT = -10.0
REMOVED_SCORE = -1e4


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of binary masks: a (N, H, W) bool, b (M, H, W) bool -> (N, M) float (0 where both are empty).

    The intersections are one matmul of the 0/1 masks (exact: counts stay far below 2^24), not an
    (N, M, H*W) broadcast, which needs N*M*H*W bytes (tens of GiB with a few hundred objects at 288^2).
    """
    af = a.reshape(a.shape[0], -1).float()
    bf = b.reshape(b.shape[0], -1).float()
    if af.shape[1] >= 1 << 24:
        raise ValueError(f"masks of {af.shape[1]} pixels are too large for exact float32 counts")
    inter = af @ bf.T
    union = af.sum(1)[:, None] + bf.sum(1)[None, :] - inter
    return inter / union.clamp(min=1)


def mask_iom(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over the smaller area of binary masks: a (N, H, W), b (M, H, W) -> (N, M) (0 for an empty one)."""
    af = a.reshape(a.shape[0], -1).float()
    bf = b.reshape(b.shape[0], -1).float()
    inter = af @ bf.T
    return inter / (torch.minimum(af.sum(1)[:, None], bf.sum(1)[None, :]) + 1e-8)


def greedy_nms(ious: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS on a pairwise IoU matrix: indices kept, highest score first (suppress IoU > thr).

    The (K, K) IoUs and (K,) scores come to the host in one transfer (a GPU waits once, not twice)."""
    k = scores.shape[0]
    host = torch.cat([ious.float().flatten(), scores.float()]).cpu().numpy()
    ious_np, order = host[: k * k].reshape(k, k), host[k * k :].argsort()[::-1]
    kept = []
    while order.size > 0:
        i = int(order[0])
        kept.append(i)
        order = order[1:][ious_np[i, order[1:]] <= iou_threshold]
    return upload(kept, scores.device, torch.long)


def nms_masks(
    probs: torch.Tensor, masks: torch.Tensor, prob_threshold: float, iou_threshold: float, use_iom: bool = False
) -> torch.Tensor:
    """probs (Q,), mask logits (Q, H, W) -> keep (Q,) bool: above threshold and kept by greedy mask NMS (IoU, or
    IoM with ``use_iom``)."""
    valid = probs > prob_threshold
    rows = valid.nonzero()[:, 0]  # the one read that sizes what follows (boolean indexing would read thrice)
    if rows.numel() == 0:
        return valid
    binary = masks.index_select(0, rows) > 0
    overlap = mask_iom(binary, binary) if use_iom else mask_iou(binary, binary)
    kept = greedy_nms(overlap, probs.index_select(0, rows), iou_threshold)
    valid_rank = torch.where(valid, valid.cumsum(0) - 1, torch.full_like(valid, -1, dtype=torch.long))
    return torch.isin(valid_rank, kept)


def nms_masks_each(
    probs: torch.Tensor, masks: torch.Tensor, prob_threshold: float, iou_threshold: float, use_iom: bool = False
) -> torch.Tensor:
    """SAM 3.1's NMS on a prompted frame (its single-frame detector path): in score order, every detection
    suppresses the lower-scored ones it overlaps by more than ``iou_threshold``, whether or not it was
    suppressed itself; IoM is the intersection over the higher-scored detection's area. -> keep (Q,) bool."""
    valid = probs > prob_threshold
    binary = (masks > 0).reshape(masks.shape[0], -1).float()
    inter = binary @ binary.T
    area = binary.sum(1, keepdim=True)
    overlap = inter / (area + 1e-8) if use_iom else inter / (area + area.T - inter).clamp(min=1)
    order = probs.argsort(descending=True)
    above = (overlap[order][:, order] > iou_threshold) & torch.ones_like(inter, dtype=torch.bool).triu(1)
    keep = valid[order]
    for i in range(keep.shape[0]):
        keep = keep & ~above[i]
    out = torch.zeros_like(keep)
    out[order] = keep
    return out


def boundary_keep(boxes_xyxy: torch.Tensor, margin: float = 0.025) -> torch.Tensor:
    """(N, 4) normalised xyxy boxes -> (N,) bool: the box centre is more than ``margin`` from every edge."""
    x0, y0, x1, y1 = boxes_xyxy.unbind(-1)
    xc, yc = (x0 + x1) / 2, (y0 + y1) / 2
    return (xc > margin) & (xc < 1.0 - margin) & (yc > margin) & (yc < 1.0 - margin)


@dataclass
class Association:
    """How this frame's detections relate to the existing tracks.

    new_det_indices:         detections that start new tracks
    unmatched_trk_ids:       non-empty tracks that no detection matched (IoU >= trk_assoc_iou_thresh)
    empty_trk_ids:           tracks whose predicted mask is empty
    det_to_matched_trk_ids:  detection index -> track ids with IoU >= assoc_iou_thresh
    trk_to_high_conf_det:    track id -> the one high-confidence, high-IoU detection (for re-conditioning)
    """

    new_det_indices: np.ndarray
    unmatched_trk_ids: np.ndarray
    empty_trk_ids: np.ndarray
    det_to_matched_trk_ids: dict[int, np.ndarray] = field(default_factory=dict)
    trk_to_high_conf_det: dict[int, int] = field(default_factory=dict)


def associate_detections(
    det_masks: torch.Tensor,
    det_scores: np.ndarray,
    trk_masks: torch.Tensor,
    trk_ids: np.ndarray,
    cfg: TrackingHeuristics,
) -> Association:
    """Match detections (N, h, w) logits to track predictions (M, h', w') logits by binary-mask IoU."""
    empty_i64 = np.array([], np.int64)
    if trk_masks.shape[0] == 0:
        if cfg.exclusive_reanchor:  # SAM 3.1: the first objects too need new_det_thresh
            return Association(np.nonzero(det_scores >= cfg.new_det_thresh)[0], empty_i64, empty_i64)
        return Association(np.arange(det_masks.shape[0]), empty_i64, empty_i64)
    nonempty = (trk_masks > 0).flatten(1).any(1)
    if det_masks.shape[0] == 0:
        trk_nonempty = nonempty.cpu().numpy()
        return Association(empty_i64, trk_ids[trk_nonempty], trk_ids[~trk_nonempty])
    if det_masks.shape[-2:] != trk_masks.shape[-2:]:
        # compare at the smaller of the two resolutions
        if det_masks.shape[-2] * det_masks.shape[-1] < trk_masks.shape[-2] * trk_masks.shape[-1]:
            trk_masks = F.interpolate(
                trk_masks[:, None], size=det_masks.shape[-2:], mode="bilinear", align_corners=False
            )[:, 0]
        else:
            det_masks = F.interpolate(
                det_masks[:, None], size=trk_masks.shape[-2:], mode="bilinear", align_corners=False
            )[:, 0]
    # the (N, M) IoUs (or IoMs) and which tracks are non-empty in one transfer
    n, m = det_masks.shape[0], trk_masks.shape[0]
    overlap = (mask_iom if cfg.use_iom_recondition else mask_iou)(det_masks > 0, trk_masks > 0)
    host = torch.cat([overlap.flatten(), nonempty.float()]).cpu().numpy()
    ious, trk_nonempty = host[: n * m].reshape(n, m), host[n * m :] > 0
    trk_matched = (ious >= cfg.trk_assoc_iou_thresh).any(axis=0)
    unmatched = trk_ids[trk_nonempty & ~trk_matched]
    is_new = (det_scores >= cfg.new_det_thresh) & ~(ious >= cfg.assoc_iou_thresh).any(axis=1)
    assoc = Association(np.nonzero(is_new)[0], unmatched, trk_ids[~trk_nonempty])
    reanchor = cfg.iom_thresh_recondition if cfg.use_iom_recondition else cfg.high_iou_thresh
    if cfg.exclusive_reanchor:
        over = ious >= reanchor
        ious = np.where(over.sum(axis=0)[None, :] > 1, 0.0, ious)
        ious = np.where(over.sum(axis=1)[:, None] > 1, 0.0, ious)
    best_trk = ious.argmax(axis=1)
    high = (det_scores >= cfg.high_conf_thresh) & ~is_new & (ious.max(axis=1) >= reanchor)
    for d in range(det_masks.shape[0]):
        assoc.det_to_matched_trk_ids[d] = trk_ids[ious[d] >= cfg.assoc_iou_thresh]
        if high[d]:
            assoc.trk_to_high_conf_det[int(trk_ids[best_trk[d]])] = d
    return assoc


@dataclass
class HotstartState:
    """Per-session bookkeeping of the hot-start heuristics (the official "rank-0 metadata").

    SAM 3.1 only: ``overlap_counts`` (pair of ids, smaller first -> detections matching both), ``matched_run``
    (consecutive frames each object was matched or detected), ``confirmed`` (objects matched on
    ``CONFIRMATION_FRAMES`` consecutive frames, or clicked) and ``unconfirmed`` (frame -> the objects not yet
    confirmed after it).
    """

    first_frame: dict[int, int] = field(default_factory=dict)
    unmatched_frames: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    keep_alive: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    overlap_frames: dict[tuple[int, int], list[int]] = field(default_factory=lambda: defaultdict(list))
    removed: set[int] = field(default_factory=set)
    overlap_counts: dict[tuple[int, int], int] = field(default_factory=lambda: defaultdict(int))
    matched_run: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    confirmed: set[int] = field(default_factory=set)
    unconfirmed: dict[int, set[int]] = field(default_factory=dict)

    def confirm(self, obj_id: int) -> None:
        """A clicked object counts as confirmed (SAM 3.1)."""
        self.confirmed.add(obj_id)
        self.matched_run[obj_id] = CONFIRMATION_FRAMES


CONFIRMATION_FRAMES = 3  # SAM 3.1: consecutive matched frames that confirm a masklet
CONFIRMATION_LOOKAHEAD = CONFIRMATION_FRAMES - 1  # a frame's output hides what is unconfirmed this many frames later


def process_hotstart_multiplex(
    state: HotstartState,
    frame_idx: int,
    reverse: bool,
    assoc: Association,
    trk_ids: list[int],
    new_obj_ids: np.ndarray,
    cfg: TrackingHeuristics,
) -> set[int]:
    """SAM 3.1's hot start (its vectorised rewrite): returns the ids removed on this frame.

    Each tracked object's keep-alive counter goes up when a detection matches it and down otherwise; a young
    object (first seen within ``hotstart_delay`` frames) is removed once unmatched on ``hotstart_unmatch_thresh``
    frames, or once detections matched it together with an object first seen strictly earlier and of a smaller id
    ``hotstart_dup_thresh`` times. Removed objects are not hidden on earlier frames; instead the masklet
    confirmation (``unconfirmed``) hides new objects until matched on 3 consecutive frames."""
    horizon = frame_idx + cfg.hotstart_delay if reverse else frame_idx - cfg.hotstart_delay
    matched = {int(i) for ids in assoc.det_to_matched_trk_ids.values() for i in ids}
    live = [i for i in trk_ids if i not in state.removed]
    for obj_id in live:
        step = 1 if obj_id in matched else -1
        state.keep_alive[obj_id] = min(
            cfg.max_trk_keep_alive, max(cfg.min_trk_keep_alive, state.keep_alive[obj_id] + step)
        )
    for obj_id in assoc.unmatched_trk_ids.tolist():
        state.unmatched_frames[obj_id].append(frame_idx)
    for ids in assoc.det_to_matched_trk_ids.values():
        ids = sorted(int(i) for i in ids)
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                state.overlap_counts[(ids[a], ids[b])] += 1

    def young(obj_id: int) -> bool:
        first = state.first_frame.get(obj_id, frame_idx)
        return first < horizon if reverse else first > horizon

    def earlier(a: int, b: int) -> bool:
        fa, fb = state.first_frame.get(a, frame_idx), state.first_frame.get(b, frame_idx)
        return fa > fb if reverse else fa < fb

    removed_now = set()
    for obj_id in live:
        if not young(obj_id):
            continue
        if len(state.unmatched_frames.get(obj_id, ())) >= cfg.hotstart_unmatch_thresh:
            removed_now.add(obj_id)
            continue
        dup = [n for (a, b), n in state.overlap_counts.items() if b == obj_id and a in live and earlier(a, obj_id)]
        if dup and max(dup) >= cfg.hotstart_dup_thresh:
            removed_now.add(obj_id)
    state.removed.update(removed_now)
    for obj_id in new_obj_ids.tolist():
        state.first_frame.setdefault(obj_id, frame_idx)
        state.keep_alive[obj_id] = cfg.init_trk_keep_alive
    # masklet confirmation over the objects tracked after this frame
    for obj_id in [i for i in live if i not in removed_now] + new_obj_ids.tolist():
        if obj_id in matched or obj_id in new_obj_ids:
            state.matched_run[obj_id] += 1
        else:
            state.matched_run[obj_id] = 0
        if state.matched_run[obj_id] >= CONFIRMATION_FRAMES:
            state.confirmed.add(obj_id)
    tracked = [i for i in live if i not in removed_now] + new_obj_ids.tolist()
    state.unconfirmed[frame_idx] = {i for i in tracked if i not in state.confirmed}
    return removed_now


def process_hotstart(
    state: HotstartState,
    frame_idx: int,
    reverse: bool,
    assoc: Association,
    new_obj_ids: np.ndarray,
    cfg: TrackingHeuristics,
) -> set[int]:
    """Update the hot-start bookkeeping for one frame; returns the ids newly removed on this frame.

    A young track (first seen within ``hotstart_delay`` frames) is removed once it has gone unmatched
    on ``hotstart_unmatch_thresh`` frames, or once it has shared a detection with an older track on
    ``hotstart_dup_thresh`` frames.
    """
    removed_now: set[int] = set()
    horizon = frame_idx + cfg.hotstart_delay if reverse else frame_idx - cfg.hotstart_delay

    def is_young(obj_id: int) -> bool:
        first = state.first_frame.get(obj_id, frame_idx)  # user-added objects have no detection frame
        return first < horizon if reverse else first > horizon

    for obj_id in new_obj_ids.tolist():
        state.first_frame.setdefault(obj_id, frame_idx)
        state.keep_alive[obj_id] = cfg.init_trk_keep_alive
    matched = set()
    for ids in assoc.det_to_matched_trk_ids.values():
        matched.update(int(i) for i in ids)
    for obj_id in matched:
        state.keep_alive[obj_id] = min(cfg.max_trk_keep_alive, state.keep_alive[obj_id] + 1)
    for obj_id in assoc.unmatched_trk_ids.tolist():
        state.unmatched_frames[obj_id].append(frame_idx)
        state.keep_alive[obj_id] = max(cfg.min_trk_keep_alive, state.keep_alive[obj_id] - 1)

    for obj_id, frames in state.unmatched_frames.items():
        if obj_id in state.removed or obj_id in removed_now:
            continue
        if len(frames) >= cfg.hotstart_unmatch_thresh and is_young(obj_id):
            removed_now.add(obj_id)

    for ids in assoc.det_to_matched_trk_ids.values():
        if len(ids) < 2:
            continue
        ids = [int(i) for i in ids]
        pick = max if reverse else min
        original = pick(ids, key=lambda i: state.first_frame.get(i, frame_idx))
        for obj_id in ids:
            if obj_id != original:
                state.overlap_frames[(original, obj_id)].append(frame_idx)
    for (_, obj_id), frames in state.overlap_frames.items():
        if obj_id in state.removed or obj_id in removed_now:
            continue
        if is_young(obj_id) and len(frames) >= cfg.hotstart_dup_thresh:
            removed_now.add(obj_id)

    state.removed.update(removed_now)
    return removed_now


def occlusion_suppression(
    binary_masks: torch.Tensor, last_occluded: torch.Tensor, reverse: bool, iou_threshold: float
) -> torch.Tensor:
    """Among overlapping tracks (pairwise IoU >= thr), suppress the more recently occluded one.

    binary_masks (N, H, W) bool, last_occluded (N,) long -> to_suppress (N,) bool. An object can only be
    suppressed by a partner that has itself been occluded at least once.
    """
    n = binary_masks.shape[0]
    if n <= 1:
        return torch.zeros(n, dtype=torch.bool, device=binary_masks.device)
    pairs = torch.triu(mask_iou(binary_masks, binary_masks) >= iou_threshold, diagonal=1)
    li, lj = last_occluded[:, None], last_occluded[None, :]
    newer = torch.lt if reverse else torch.gt
    suppress_i = pairs & newer(li, lj) & (lj > NEVER_OCCLUDED)
    suppress_j = pairs & newer(lj, li) & (li > NEVER_OCCLUDED)
    return suppress_i.any(dim=1) | suppress_j.any(dim=0)
