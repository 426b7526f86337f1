"""Detect-then-track heuristics on hand-made masks with known answers."""

from __future__ import annotations

import numpy as np
import torch

from sam3.inference.association import (
    HotstartState,
    TrackingHeuristics,
    associate_detections,
    boundary_keep,
    mask_iom,
    mask_iou,
    nms_masks,
    nms_masks_each,
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


def test_sam31_overlap_rules():
    """IoM (intersection over the smaller area): a box inside a larger one overlaps it fully."""
    big, small, apart = box_mask(0, 0, 10, 10), box_mask(0, 0, 5, 5), box_mask(20, 20, 30, 30)
    m = torch.stack([big, small, apart]) > 0
    iom = mask_iom(m, m)
    assert float(iom[0, 1]) == float(iom[1, 0]) == 1.0 and float(iom[0, 2]) == 0.0
    assert abs(float(mask_iou(m, m)[0, 1]) - 0.25) < 1e-6
    masks = torch.stack([big, small, apart])
    # greedy IoM NMS: the big box (0.9) removes the small one inside it (IoM 1 > 0.5, IoU only 0.25)
    assert nms_masks(torch.tensor([0.9, 0.8, 0.7]), masks, 0.5, 0.5, use_iom=True).tolist() == [True, False, True]
    assert nms_masks(torch.tensor([0.9, 0.8, 0.7]), masks, 0.5, 0.5).tolist() == [True, True, True]


def test_sam31_prompt_frame_nms_lets_suppressed_detections_suppress():
    """On a prompted frame SAM 3.1 (its perflib path) lets every detection suppress the lower-scored ones, also one
    that was suppressed itself, and its IoM divides by the higher-scored detection's area."""
    a, b, c = box_mask(0, 0, 10, 10), box_mask(6, 0, 16, 10), box_mask(12, 0, 22, 10)  # a-b, b-c: IoU 0.25
    masks, probs = torch.stack([a, b, c]), torch.tensor([0.9, 0.8, 0.7])
    assert nms_masks(probs, masks, 0.5, 0.2).tolist() == [True, False, True]  # greedy: b gone, so c stays
    assert nms_masks_each(probs, masks, 0.5, 0.2).tolist() == [True, False, False]  # b still removes c
    small_first = torch.stack([box_mask(0, 0, 4, 4), box_mask(0, 0, 10, 10)])  # the smaller one scores higher
    # IoM over the higher-scored (small) detection's area: 16 / 16 = 1; over the big one's it would be 0.16
    assert nms_masks_each(torch.tensor([0.9, 0.8]), small_first, 0.5, 0.5, use_iom=True).tolist() == [True, False]
    assert nms_masks_each(torch.tensor([0.8, 0.9]), small_first, 0.5, 0.5, use_iom=True).tolist() == [True, True]


def test_sam31_boundary_rule():
    boxes = torch.tensor([[0.0, 0.0, 0.04, 0.04], [0.4, 0.4, 0.6, 0.6], [0.96, 0.4, 1.0, 0.6]])
    assert boundary_keep(boxes).tolist() == [False, True, False]


def test_sam31_association():
    """IoM tests, first objects need new_det_thresh, and a detection matching two tracks re-anchors none."""
    cfg = TrackingHeuristics.sam31()
    dets = torch.stack([box_mask(0, 0, 10, 10), box_mask(20, 20, 30, 30)])
    first = associate_detections(dets, np.array([0.9, 0.6]), torch.zeros(0, 32, 32), np.array([], np.int64), cfg)
    assert first.new_det_indices.tolist() == [0]  # 0.6 < 0.65 (SAM 3 would start both)
    assert associate_detections(
        dets, np.array([0.9, 0.6]), torch.zeros(0, 32, 32), np.array([], np.int64), TrackingHeuristics()
    ).new_det_indices.tolist() == [0, 1]
    # the detection covers two small tracks (IoM 1 with each): matched to both, re-anchored to neither
    trks = torch.stack([box_mask(0, 0, 4, 4), box_mask(5, 5, 9, 9), box_mask(20, 20, 30, 30)])
    a = associate_detections(dets, np.array([0.9, 0.95]), trks, np.array([3, 4, 5]), cfg)
    assert a.new_det_indices.tolist() == [] and a.unmatched_trk_ids.tolist() == []
    assert a.trk_to_high_conf_det == {5: 1}
    assert a.det_to_matched_trk_ids[0].tolist() == []  # zeroed with its re-anchoring
    plain = associate_detections(dets, np.array([0.9, 0.95]), trks, np.array([3, 4, 5]), TrackingHeuristics())
    assert plain.det_to_matched_trk_ids[0].tolist() == [3, 4]  # IoU 0.16 >= 0.1 each (SAM 3's rule)


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
