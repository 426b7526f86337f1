"""Detect-then-track heuristics on hand-made masks with known answers."""

from __future__ import annotations

import numpy as np
import torch

from sam3.inference.association import (
    HotstartState,
    TrackingHeuristics,
    associate_detections,
    mask_iou,
    nms_masks,
    occlusion_suppression,
    process_hotstart,
)


def box_mask(x0, y0, x1, y1, size=32) -> torch.Tensor:
    """Mask logits: +5 inside the box, -5 outside."""
    m = torch.full((size, size), -5.0)
    m[y0:y1, x0:x1] = 5.0
    return m


def test_mask_iou_and_nms():
    a = torch.stack([box_mask(0, 0, 10, 10), box_mask(0, 0, 10, 5), box_mask(20, 20, 30, 30)])
    ious = mask_iou(a > 0, a > 0)
    assert torch.allclose(ious.diagonal(), torch.ones(3))
    assert abs(float(ious[0, 1]) - 0.5) < 1e-6 and float(ious[0, 2]) == 0.0
    probs = torch.tensor([0.6, 0.9, 0.7])
    keep = nms_masks(probs, a, prob_threshold=0.5, iou_threshold=0.1)
    # mask 1 (0.9) suppresses mask 0 (IoU 0.5 > 0.1); mask 2 does not overlap
    assert keep.tolist() == [False, True, True]
    # below the probability threshold nothing is kept
    assert not nms_masks(torch.tensor([0.4, 0.3, 0.2]), a, 0.5, 0.1).any()


def test_association_new_matched_unmatched_empty():
    cfg = TrackingHeuristics()
    dets = torch.stack([box_mask(0, 0, 10, 10), box_mask(20, 20, 30, 30), box_mask(0, 20, 5, 25)])
    scores = np.array([0.9, 0.95, 0.6])
    trks = torch.stack([box_mask(0, 0, 10, 9), box_mask(12, 0, 18, 6), torch.full((32, 32), -5.0)])
    ids = np.array([7, 8, 9])
    a = associate_detections(dets, scores, trks, ids, cfg)
    assert a.new_det_indices.tolist() == [1]  # det 2 is unmatched but below new_det_thresh
    assert a.unmatched_trk_ids.tolist() == [8]
    assert a.empty_trk_ids.tolist() == [9]
    assert a.det_to_matched_trk_ids[0].tolist() == [7]
    assert a.trk_to_high_conf_det == {7: 0}  # score 0.9 >= 0.8 and IoU 0.9 >= 0.8


def test_hotstart_removes_young_unmatched_track():
    cfg = TrackingHeuristics(hotstart_delay=15, hotstart_unmatch_thresh=3)
    st = HotstartState()
    empty = np.array([], np.int64)
    from sam3.inference.association import Association

    process_hotstart(st, 0, False, Association(np.array([0]), empty, empty), np.array([1]), cfg)
    removed = set()
    for t in range(1, 4):
        removed |= process_hotstart(st, t, False, Association(empty, np.array([1]), empty), empty, cfg)
    assert removed == {1} and st.removed == {1}


def test_occlusion_suppression_prefers_never_occluded():
    m = torch.stack([box_mask(0, 0, 10, 10), box_mask(0, 0, 10, 10)]) > 0
    # object 0 was occluded at frame 5, object 1 never: only an object occluded before can be suppressed
    sup = occlusion_suppression(m, torch.tensor([5, -1]), reverse=False, iou_threshold=0.7)
    assert sup.tolist() == [False, False]
    sup = occlusion_suppression(m, torch.tensor([5, 2]), reverse=False, iou_threshold=0.7)
    assert sup.tolist() == [True, False]
