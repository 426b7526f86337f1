"""AutomaticMaskGenerator's parts on the tiny heads (fast): knob checks, the grid and crops against SAM 2's own
functions, the batched decode against predict_inst, the RLEs against pycocotools. The whole generator is
compared with SAM 2's in tests/parity/test_everything_parity.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from sam3.inference.automatic_masks import (
    AutomaticMaskGenerator,
    EverythingConfig,
    _to_rle,
    crop_boxes,
    point_grids,
)
from sam3.inference.interactive import SamImageFeatures
from tests.inference.test_interactive import HW, features, heads, predictor  # noqa: F401 (fixtures)
from tests.parity.sam2_adapter import sam2_available


def test_defaults_are_sam2s():
    if not sam2_available():
        pytest.skip("sam2 not installed in .sam2 (./run_tests.sh installs it)")
    import inspect

    from tests.parity.sam2_adapter import import_sam2_amg

    theirs = inspect.signature(import_sam2_amg().SAM2AutomaticMaskGenerator).parameters
    for name, value in EverythingConfig().as_dict().items():
        assert theirs[name].default == value, name


@pytest.mark.parametrize(
    "knobs,field",
    [
        ({"points_per_side": 0}, "points_per_side"),
        ({"points_per_side": 2.0}, "points_per_side"),
        ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh"),
        ({"box_nms_thresh": 1.5}, "box_nms_thresh"),
        ({"multimask_output": 1}, "multimask_output"),
        ({"crop_n_layers": 2, "crop_n_points_downscale_factor": 8, "points_per_side": 32}, "crop_n_points"),
        ({"stability_score_offset": 0.0}, "stability_score_offset"),
    ],
)
def test_bad_knobs_name_their_field(knobs, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        EverythingConfig(**knobs).check()


@pytest.mark.parametrize("hw", [(512, 512), (400, 600), (37, 1000)])
@pytest.mark.parametrize("layers", [0, 1, 2])
def test_grids_and_crops_are_sam2s(hw, layers):
    if not sam2_available():
        pytest.skip("sam2 not installed in .sam2 (./run_tests.sh installs it)")
    from tests.parity.sam2_adapter import import_sam2_amg

    import_sam2_amg()
    from sam2.utils import amg

    boxes, layer_of = crop_boxes(hw, layers, 512 / 1500)
    theirs, their_layers = amg.generate_crop_boxes(hw, layers, 512 / 1500)
    assert [list(b) for b in boxes] == theirs and layer_of == their_layers
    for mine, ref in zip(point_grids(32, layers, 2), amg.build_all_layer_point_grids(32, layers, 2)):
        assert np.array_equal(mine, ref)


def test_decode_points_is_predict_inst_before_its_clean_up(predictor, features):  # noqa: F811
    feats: SamImageFeatures = predictor.prepare_features(features)
    points = np.array([[10.0, 20.0], [150.5, 99.0], [3.0, 140.0]], dtype=np.float32)
    low_res, iou = predictor.decode_points(feats, HW, points)
    _, iou_ref, low_ref = predictor.predict_inst(
        feats, HW, point_coords=points[:, None], point_labels=np.ones((3, 1), dtype=np.int64)
    )
    assert torch.equal(low_res.clamp(-32, 32), torch.from_numpy(low_ref))
    assert torch.equal(iou, torch.from_numpy(iou_ref))


def test_decode_candidates_makes_masks_only_where_a_candidate_passes(predictor, features):  # noqa: F811
    feats: SamImageFeatures = predictor.prepare_features(features)
    points = np.array([[10.0, 20.0], [150.5, 99.0], [3.0, 140.0], [80.0, 60.0], [40.0, 10.0]], dtype=np.float32)
    low_all, iou_all = predictor.decode_points(feats, HW, points)
    floor = float(iou_all.max(dim=1).values.median())  # some prompts pass, some do not
    rows, low_res, iou = predictor.decode_candidates(feats, HW, points, floor)
    assert torch.equal(iou, iou_all)  # the IoU head reads the same tokens
    assert rows.tolist() == (iou_all > floor).any(dim=1).nonzero()[:, 0].tolist() and 0 < len(rows) < len(points)
    torch.testing.assert_close(low_res, low_all[rows], atol=1e-5, rtol=1e-5)  # a smaller batch: round-off only
    none, _, _ = predictor.decode_candidates(feats, HW, points, 1.0)
    assert none.numel() == 0


def test_rles_are_pycocotools_at_the_image_size():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 30, 40, generator=g) > 0.6
    crop = (10, 5, 50, 35)
    rles = _to_rle(masks, crop, (60, 70))
    for m, rle in zip(masks, rles):
        full = np.zeros((60, 70), dtype=np.uint8)
        full[5:35, 10:50] = m.numpy()
        assert rle == mask_utils.encode(np.asfortranarray(full))


def test_generate_on_random_heads(predictor, features):  # noqa: F811
    feats = predictor.prepare_features(features)
    config = EverythingConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    found = AutomaticMaskGenerator(predictor, config).generate(HW, lambda box: feats)
    assert found, "no mask without any filter"
    assert [m.area for m in found] == sorted((m.area for m in found), reverse=True)
    for m in found:
        mask = m.mask()
        assert mask.shape == HW and int(mask.sum()) == m.area
        ys, xs = np.nonzero(mask)
        assert m.bbox == (xs.min(), ys.min(), xs.max(), ys.max())
        assert m.crop_box == (0, 0, HW[1], HW[0])


def test_a_one_pixel_side_skips_its_empty_crops(predictor, features):  # noqa: F811
    boxes, _ = crop_boxes((1, 40), 1, 512 / 1500)
    assert any(b[3] <= b[1] for b in boxes)  # SAM 2's own layout has an empty crop here
    feats = predictor.prepare_features(features)
    config = EverythingConfig(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0, crop_n_layers=1)
    seen = []

    def features_of(box):
        seen.append(box)
        return feats

    AutomaticMaskGenerator(predictor, config).generate((1, 40), features_of)
    assert seen and all(b[2] > b[0] and b[3] > b[1] for b in seen)
