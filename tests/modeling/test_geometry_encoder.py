"""GeometryEncoder at the tiny preset: token layout (CLS placement), padding, RoI scaling, empty prompts."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from sam3.config import get_config
from sam3.modeling.detector.geometry_encoder import GeometryEncoder, concat_right_padded
from sam3.modeling.outputs import GeometricPrompt
from sam3.ops.boxes import box_cxcywh_to_xyxy


@pytest.fixture(scope="module")
def encoder(tiny):
    torch.manual_seed(0)
    return GeometryEncoder(tiny.geometry, tiny.d_model).eval()


def _image(cfg, batch: int, hw: tuple[int, int] | None = None, seed: int = 0):
    g = cfg.feature_size
    h, w = hw or (g, g)
    gen = torch.Generator().manual_seed(seed)
    feat = torch.randn(batch, h * w, cfg.d_model, generator=gen)
    pos = torch.randn(batch, h * w, cfg.d_model, generator=gen)
    return feat, pos, (h, w)


def _prompt(boxes, box_labels, box_mask=None, points=None, point_labels=None, point_mask=None) -> GeometricPrompt:
    b = boxes.shape[0]
    p = GeometricPrompt.empty(b)
    p.boxes, p.box_labels = boxes, box_labels
    p.box_mask = torch.zeros(boxes.shape[:2], dtype=torch.bool) if box_mask is None else box_mask
    if points is not None:
        p.points, p.point_labels = points, point_labels
        p.point_mask = torch.zeros(points.shape[:2], dtype=torch.bool) if point_mask is None else point_mask
    return p


BOXES = torch.tensor([[[0.4, 0.55, 0.3, 0.5], [0.3, 0.3, 0.5, 0.4]], [[0.7, 0.2, 0.2, 0.25], [0.5, 0.5, 0.1, 0.1]]])
POINTS = torch.tensor([[[0.2, 0.8], [0.5, 0.1]], [[0.9, 0.4], [0.33, 0.66]]])


def test_text_only_prompt_is_one_cls_token(tiny, encoder):
    feat, pos, hw = _image(tiny, 2)
    with torch.no_grad():
        tokens, mask = encoder(GeometricPrompt.empty(2), feat, pos, hw)
    assert tokens.shape == (2, 1, tiny.d_model)
    assert mask.shape == (2, 1) and not mask.any()
    assert torch.isfinite(tokens).all()


def test_shapes_with_points_and_boxes(tiny, encoder):
    feat, pos, hw = _image(tiny, 2)
    labels = torch.tensor([[1, 0], [0, 1]])
    prompt = _prompt(BOXES, labels, points=POINTS, point_labels=torch.ones(2, 2, dtype=torch.long))
    with torch.no_grad():
        tokens, mask = encoder(prompt, feat, pos, hw)
    assert tokens.shape == (2, 2 + 2 + 1, tiny.d_model)
    assert not mask.any()


def test_empty_points_never_call_grid_sample(tiny, encoder, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("grid_sample called with no points")

    monkeypatch.setattr(torch.nn.functional, "grid_sample", forbidden)
    feat, pos, hw = _image(tiny, 1)
    with torch.no_grad():
        tokens, mask = encoder(_prompt(BOXES[:1, :1], torch.ones(1, 1, dtype=torch.long)), feat, pos, hw)
    assert tokens.shape == (1, 2, tiny.d_model)


def test_padded_batch_matches_unpadded_elements(tiny, encoder):
    """Element 1 has one box and one point of padding: its valid tokens must equal running it alone,
    and its CLS token must sit right after its last valid token, followed by the padding."""
    feat, pos, hw = _image(tiny, 2)
    box_mask = torch.tensor([[False, False], [False, True]])
    point_mask = torch.tensor([[False, False], [False, True]])
    box_labels = torch.tensor([[1, 0], [0, 1]])
    point_labels = torch.tensor([[1, 0], [1, 1]])
    prompt = _prompt(BOXES, box_labels, box_mask, POINTS, point_labels, point_mask)
    with torch.no_grad():
        tokens, mask = encoder(prompt, feat, pos, hw)
        alone, alone_mask = encoder(
            _prompt(BOXES[1:, :1], box_labels[1:, :1], None, POINTS[1:, :1], point_labels[1:, :1]),
            feat[1:],
            pos[1:],
            hw,
        )
        first, _ = encoder(
            _prompt(BOXES[:1], box_labels[:1], None, POINTS[:1], point_labels[:1]), feat[:1], pos[:1], hw
        )
    assert mask.tolist() == [[False] * 5, [False, False, False, True, True]]
    assert alone.shape == (1, 3, tiny.d_model) and not alone_mask.any()
    # [point, box, cls] for element 1; [point, point, box, box, cls] for element 0.
    torch.testing.assert_close(tokens[1, :3], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokens[0], first[0], atol=1e-5, rtol=1e-5)


def test_padded_values_do_not_leak(tiny, encoder):
    feat, pos, hw = _image(tiny, 2)
    box_mask = torch.tensor([[False, False], [False, True]])
    labels = torch.tensor([[1, 0], [0, 1]])
    changed = BOXES.clone()
    changed[1, 1] = torch.tensor([0.9, 0.9, 0.05, 0.05])
    with torch.no_grad():
        a, mask = encoder(_prompt(BOXES, labels, box_mask), feat, pos, hw)
        b, _ = encoder(_prompt(changed, labels.masked_fill(box_mask, 0), box_mask), feat, pos, hw)
    valid = ~mask
    torch.testing.assert_close(a[valid], b[valid], atol=1e-5, rtol=1e-5)


def test_labels_change_the_token(tiny, encoder):
    feat, pos, hw = _image(tiny, 1)
    with torch.no_grad():
        pos_tok, _ = encoder(_prompt(BOXES[:1, :1], torch.ones(1, 1, dtype=torch.long)), feat, pos, hw)
        neg_tok, _ = encoder(_prompt(BOXES[:1, :1], torch.zeros(1, 1, dtype=torch.long)), feat, pos, hw)
    assert (pos_tok - neg_tok).abs().max() > 1e-3


def test_roi_pooling_scales_boxes_by_the_actual_map_size(tiny):
    """On a non-square map the box must be scaled by (W, H, W, H) of that map, not by the config's grid."""
    torch.manual_seed(1)
    enc = GeometryEncoder(tiny.geometry, tiny.d_model).eval()
    with torch.no_grad():  # isolate the pooled term
        for lin in (enc.boxes_direct_project, enc.boxes_pos_enc_project):
            lin.weight.zero_()
            lin.bias.zero_()
        enc.label_embed.weight.zero_()
    h, w = 12, 20
    fmap = torch.randn(1, tiny.d_model, h, w)
    boxes = BOXES[:1]
    with torch.no_grad():
        got = enc._encode_boxes(boxes, torch.ones(1, 2, dtype=torch.long), fmap)
        xyxy = box_cxcywh_to_xyxy(boxes[0]) * torch.tensor([w, h, w, h])
        want = enc.boxes_pool_project(roi_align(fmap, [xyxy], enc.roi_size)).flatten(1)
    torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-5)


def test_concat_right_padded_places_valid_tokens_contiguously():
    a = torch.arange(6, dtype=torch.float32).view(2, 3, 1)
    a_mask = torch.tensor([[False, True, True], [False, False, False]])
    b = 10 + torch.arange(4, dtype=torch.float32).view(2, 2, 1)
    b_mask = torch.tensor([[False, False], [False, True]])
    out, mask = concat_right_padded(a, a_mask, b, b_mask)
    assert mask.tolist() == [[False, False, False, True, True], [False, False, False, False, True]]
    assert out[0, :3, 0].tolist() == [0.0, 10.0, 11.0]
    assert out[1, :4, 0].tolist() == [3.0, 4.0, 5.0, 12.0]


def test_builds_on_meta_device(tiny):
    with torch.device("meta"):
        enc = GeometryEncoder(get_config("sam3").geometry, 256)
    assert all(p.is_meta for p in enc.parameters())
    assert sum(p.numel() for p in enc.parameters()) == 8_215_808  # spec section 8
