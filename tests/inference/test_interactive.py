"""InteractivePredictor (SAM-1 task) on the tiny preset: shapes, prompt handling, post-processing, errors.

The tracker-neck features are random here (the predictor only consumes them); parity with the official
predictor is checked separately against the oracle.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sam3.config import get_config
from sam3.inference.interactive import InteractivePredictor, SamImageFeatures
from sam3.modeling.interactive.mask_decoder import MaskDecoder
from sam3.modeling.interactive.prompt_encoder import PromptEncoder
from sam3.modeling.outputs import BackboneFeatures
from sam3.ops.masks import fill_small_components

CFG = get_config("tiny")
G, C, S = CFG.feature_size, CFG.d_model, CFG.low_res_mask_size
HW = (150, 200)


class Heads(nn.Module):
    """Stand-in for the tracker: just the three attributes the predictor reads."""

    def __init__(self):
        super().__init__()
        self.sam_prompt_encoder = PromptEncoder.from_config(CFG)
        self.sam_mask_decoder = MaskDecoder.from_config(CFG)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, C))


@pytest.fixture(scope="module")
def heads() -> Heads:
    torch.manual_seed(0)
    h = Heads().eval()
    with torch.no_grad():
        for p in h.parameters():
            p.add_(torch.randn_like(p) * (0.05 if p.dim() > 1 else 0.2))
    return h


@pytest.fixture(scope="module")
def features() -> BackboneFeatures:
    g = torch.Generator().manual_seed(1)
    levels = [torch.randn(1, C, s, s, generator=g) for s in (4 * G, 2 * G, G)]
    return BackboneFeatures(fpn=levels, pos=levels, sam2_fpn=levels, sam2_pos=levels)


@pytest.fixture(scope="module")
def predictor(heads) -> InteractivePredictor:
    return InteractivePredictor(heads)


CLICK = dict(point_coords=np.array([[120.0, 60.0]]), point_labels=np.array([1]))


def test_one_click_multimask_shapes_and_types(predictor, features):
    masks, iou, low = predictor.predict_inst(features, HW, **CLICK)
    assert masks.shape == (3, *HW) and iou.shape == (3,) and low.shape == (3, S, S)
    assert masks.dtype == iou.dtype == low.dtype == np.float32
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert np.all((iou > 0) & (iou < 1))
    assert np.abs(low).max() <= 32.0


def test_single_mask_and_logits(predictor, features):
    masks, iou, low = predictor.predict_inst(features, HW, multimask_output=False, **CLICK)
    assert masks.shape == (1, *HW) and iou.shape == (1,) and low.shape == (1, S, S)
    logits, iou2, _ = predictor.predict_inst(features, HW, multimask_output=False, return_logits=True, **CLICK)
    np.testing.assert_array_equal(masks, (logits > 0).astype(np.float32))
    np.testing.assert_array_equal(iou, iou2)


def test_postprocess_is_hole_filling_then_bilinear_resize(heads, features):
    raw = InteractivePredictor(heads, max_hole_area=0)
    filled = InteractivePredictor(heads, max_hole_area=256)
    logits_raw, _, low = raw.predict_inst(features, HW, return_logits=True, **CLICK)
    logits_filled, _, _ = filled.predict_inst(features, HW, return_logits=True, **CLICK)
    assert np.abs(low).max() < 32  # so the returned low-res logits are the unclamped ones
    low_t = torch.from_numpy(low)[None]
    expect_raw = F.interpolate(low_t, HW, mode="bilinear", align_corners=False)[0].numpy()
    expect_filled = F.interpolate(fill_small_components(low_t, 256), HW, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(logits_raw, expect_raw, atol=1e-5)
    np.testing.assert_allclose(logits_filled, expect_filled[0].numpy(), atol=1e-5)


def test_pixel_and_normalised_coordinates_agree(predictor, features):
    h, w = HW
    px = predictor.predict_inst(features, HW, point_coords=[[50.0, 90.0]], point_labels=[1])
    frac = predictor.predict_inst(
        features, HW, point_coords=[[50.0 / w, 90.0 / h]], point_labels=[1], normalize_coords=False
    )
    for a, b in zip(px, frac):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_box_is_two_corner_points_before_the_clicks(heads, predictor, features):
    box = np.array([20.0, 30.0, 160.0, 120.0])
    clicks = np.array([[50.0, 60.0]])
    _, iou, low = predictor.predict_inst(
        features, HW, box=box, point_coords=clicks, point_labels=[0], multimask_output=True
    )
    # the same prompt given as explicit labelled points
    pts = np.concatenate([box.reshape(2, 2), clicks])
    _, iou2, low2 = predictor.predict_inst(features, HW, point_coords=pts, point_labels=[2, 3, 0])
    np.testing.assert_allclose(low, low2, atol=1e-5)
    np.testing.assert_allclose(iou, iou2, atol=1e-6)


def test_batch_of_objects_on_one_image(predictor, features):
    coords = np.array([[[30.0, 40.0], [60.0, 80.0]], [[100.0, 100.0], [120.0, 20.0]]])
    labels = np.array([[1, 0], [1, 1]])
    boxes = np.array([[10.0, 10.0, 90.0, 90.0], [80.0, 5.0, 190.0, 140.0]])
    masks, iou, low = predictor.predict_inst(
        features, HW, point_coords=coords, point_labels=labels, box=boxes, multimask_output=False
    )
    assert masks.shape == (2, 1, *HW) and iou.shape == (2, 1) and low.shape == (2, 1, S, S)
    # each object alone gives the same answer
    _, iou0, low0 = predictor.predict_inst(
        features, HW, point_coords=coords[1], point_labels=labels[1], box=boxes[1], multimask_output=False
    )
    np.testing.assert_allclose(low[1], low0, atol=1e-4)
    np.testing.assert_allclose(iou[1], iou0, atol=1e-5)


def test_previous_low_res_mask_as_prompt(predictor, features):
    _, iou, low = predictor.predict_inst(features, HW, **CLICK)
    best = low[np.argmax(iou)][None]
    masks, _, _ = predictor.predict_inst(
        features, HW, point_coords=[[120.0, 60.0], [20.0, 20.0]], point_labels=[1, 0],
        mask_input=best, multimask_output=False,
    )  # fmt: skip
    assert masks.shape == (1, *HW)
    only_mask, _, _ = predictor.predict_inst(features, HW, mask_input=best)
    assert only_mask.shape == (3, *HW)


def test_prepared_features_and_lazy_heads(heads, predictor, features):
    prepared = predictor.prepare_features(features)
    assert isinstance(prepared, SamImageFeatures)
    assert prepared.image_embed.shape == (1, C, G, G)
    assert prepared.high_res is None and prepared.tokens is not None  # the fast path's features
    assert [t.shape for t in prepared.skips] == [(1, G, G, 2, 2, 2, 2, C // 8), (1, G, G, 2, 2, C // 4)]
    plain = predictor.prepare_features(features, precompute_tokens=False)
    assert plain.skips is None and [t.shape[1] for t in plain.high_res] == [C // 8, C // 4]
    a = predictor.predict_inst(prepared, HW, **CLICK)
    b = predictor.predict_inst(features, HW, **CLICK)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # weights swapped in after construction (load_state_dict(assign=True)) are picked up
    old = heads.no_mem_embed
    try:
        heads.no_mem_embed = nn.Parameter(torch.full((1, 1, C), 3.0))
        c = predictor.predict_inst(features, HW, **CLICK)
        assert not np.allclose(c[2], b[2])
    finally:
        heads.no_mem_embed = old


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(point_coords=[[1.0, 2.0]]), "together"),
        (dict(point_labels=[1]), "together"),
        (dict(point_coords=[[1.0, 2.0, 3.0]], point_labels=[1]), r"\(N, 2\)"),
        (dict(point_coords=[[1.0, 2.0], [3.0, 4.0]], point_labels=[1]), "does not match"),
        (dict(point_coords=[[1.0, 2.0]], point_labels=[5]), "must be in"),
        (dict(point_coords=[[np.nan, 2.0]], point_labels=[1]), "finite"),
        (dict(box=[1.0, 2.0, 3.0]), "xyxy"),
        (dict(box=np.zeros((2, 4)), point_coords=np.zeros((3, 1, 2)), point_labels=np.ones((3, 1))), "boxes"),
        (dict(point_coords=[[1.0, 2.0]], point_labels=[1], mask_input=np.zeros((1, 10, 10))), "mask_input"),
        (
            dict(point_coords=np.zeros((2, 1, 2)), point_labels=np.ones((2, 1)), mask_input=np.zeros((3, 1, S, S))),
            "mask inputs",
        ),
    ],
)
def test_invalid_prompts_raise_value_error(predictor, features, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict_inst(features, HW, **kwargs)


def test_invalid_features_and_size_raise_value_error(predictor, features):
    with pytest.raises(ValueError, match="orig_hw"):
        predictor.predict_inst(features, (0, 10), **CLICK)
    with pytest.raises(ValueError, match="sam2_fpn"):
        predictor.predict_inst(BackboneFeatures(fpn=features.fpn, pos=features.pos), HW, **CLICK)
    two = [torch.cat([t, t]) for t in features.sam2_fpn]
    with pytest.raises(ValueError, match="one image"):
        predictor.predict_inst(BackboneFeatures(two, two, two, two), HW, **CLICK)


@pytest.mark.parametrize(
    "prompt",
    [
        dict(CLICK, multimask_output=True),
        dict(point_coords=[[120.0, 60.0], [20.0, 20.0]], point_labels=[1, 0], multimask_output=False),
        dict(box=[10.0, 20.0, 150.0, 120.0], point_coords=[[60.0, 70.0]], point_labels=[1]),
        dict(point_coords=np.array([[[120.0, 60.0]], [[30.0, 90.0]]]), point_labels=np.ones((2, 1))),  # B = 2
        dict(CLICK, return_logits=True),
    ],
)
def test_precomputed_image_tokens_match_the_plain_path(predictor, features, prompt):
    """The per-image precompute (first block's image-only projections, dense PE) is the plain path
    to fp32 round-off, with identical thresholded masks."""
    fast = predictor.prepare_features(features)
    plain = predictor.prepare_features(features, precompute_tokens=False)
    assert fast.tokens is not None and plain.tokens is None
    assert fast.nbytes() > plain.nbytes()
    a = predictor.predict_inst(fast, HW, **prompt)
    b = predictor.predict_inst(plain, HW, **prompt)
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)  # iou
    np.testing.assert_allclose(a[2], b[2], atol=1e-4)  # low-res logits (|logit| up to ~30)
    if prompt.get("return_logits"):
        np.testing.assert_allclose(a[0], b[0], atol=1e-4)
    else:
        assert (a[0] != b[0]).mean() < 1e-4


def test_bool_masks_are_the_thresholded_float_masks(predictor, features):
    as_float = predictor.predict_inst(features, HW, **CLICK)[0]
    as_bool = predictor.predict_inst(features, HW, **CLICK, bool_masks=True)[0]
    assert as_float.dtype == np.float32 and as_bool.dtype == np.bool_
    np.testing.assert_array_equal(as_bool, as_float > 0.5)


def test_batched_resize_matches_per_channel_resize():
    from sam3.inference.interactive import _resize

    logits = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(3)) * 8
    ref = F.interpolate(logits, HW, mode="bilinear", align_corners=False)
    out = _resize(logits, HW)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert torch.equal(out > 0, ref > 0)
