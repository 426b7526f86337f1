"""Box helpers: the clamped logit, format round trips, and boxes around masks."""

from __future__ import annotations

import torch
from torchvision.ops import masks_to_boxes as tv_masks_to_boxes

from sam3.ops.boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid, masks_to_boxes


def test_inverse_sigmoid_inverts_sigmoid_inside_the_clamp():
    logits = torch.linspace(-6.0, 6.0, 101)
    assert torch.allclose(inverse_sigmoid(torch.sigmoid(logits)), logits, atol=1e-4)


def test_inverse_sigmoid_clamps_to_unit_interval_then_floors_both_sides_at_eps():
    # x and 1 - x are floored separately (not x to [eps, 1 - eps]): sigma^-1(0) = log(1e-3 / 1).
    x = torch.tensor([-0.5, 0.0, 1e-5, 1 - 1e-5, 1.0, 1.5])
    expected = torch.log(torch.tensor([1e-3, 1e-3, 1e-3 / (1 - 1e-5), (1 - 1e-5) / 1e-3, 1 / 1e-3, 1 / 1e-3]))
    assert torch.allclose(inverse_sigmoid(x), expected)


def test_box_conversions_round_trip():
    cxcywh = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.05, 0.1]])
    xyxy = box_cxcywh_to_xyxy(cxcywh)
    assert torch.allclose(xyxy[0], torch.tensor([0.4, 0.3, 0.6, 0.7]))
    assert torch.allclose(box_xyxy_to_cxcywh(xyxy), cxcywh)
    batched = torch.rand(2, 3, 5, 4)
    assert torch.allclose(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(batched)), batched, atol=1e-6)


def test_masks_to_boxes_is_inclusive_and_zero_for_empty_masks():
    masks = torch.zeros(3, 6, 8, dtype=torch.bool)
    masks[0, 5, 3] = True  # one pixel at x=3, y=5
    masks[1, 1:4, 2:7] = True
    boxes = masks_to_boxes(masks)
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [[3, 5, 3, 5], [2, 1, 6, 3], [0, 0, 0, 0]]
    assert masks_to_boxes(torch.zeros(0, 6, 8, dtype=torch.bool)).shape == (0, 4)


def test_masks_to_boxes_matches_torchvision_on_real_shapes(astronaut):
    # Thresholded channels of a real photo give irregular, multi-component masks.
    img = torch.from_numpy(astronaut[::4, ::4].copy()).permute(2, 0, 1).float()
    masks = torch.cat([img > 200, img < 30, torch.zeros(1, *img.shape[1:], dtype=torch.bool)])
    assert torch.equal(masks_to_boxes(masks), tv_masks_to_boxes(masks))
    assert torch.equal(masks_to_boxes(masks.to(torch.uint8)), tv_masks_to_boxes(masks))
