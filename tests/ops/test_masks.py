"""Connected components and the two hole-filling flavours, on hand-made masks with known answers."""

from __future__ import annotations

import pytest
import torch

from sam3.ops.masks import component_areas, fill_holes_in_mask_scores, fill_small_components, label_components


def _logits(rows: list[str]) -> torch.Tensor:
    """ASCII art -> (1, 1, H, W) logits: '#' = +5 (foreground), '.' = -5 (background)."""
    t = torch.tensor([[5.0 if ch == "#" else -5.0 for ch in row] for row in rows])
    return t[None, None]


def test_components_are_8_connected_with_per_pixel_areas():
    mask = torch.tensor(
        [
            [1, 0, 0, 0, 1],
            [0, 1, 0, 0, 1],
            [0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0],
        ],
        dtype=torch.bool,
    )[None]
    labels, areas = label_components(mask)  # on the host
    assert labels.shape == mask.shape and areas.shape == mask.shape
    # the diagonal pair (0,0)-(1,1) is one component: 8-connectivity
    assert labels[0, 0, 0] == labels[0, 1, 1] != 0
    expected = torch.tensor(
        [
            [2, 0, 0, 0, 2],
            [0, 2, 0, 0, 2],
            [0, 0, 0, 0, 0],
            [3, 3, 3, 0, 0],
        ]
    )
    assert torch.equal(areas[0], expected)
    assert torch.equal(component_areas(mask), areas)  # the areas alone on the mask's device, as the clean-up takes them
    assert labels[0][~mask[0]].eq(0).all()
    assert len(labels.unique()) == 4  # background + 3 components


def test_component_areas_accept_a_channel_axis_and_label_each_image_alone():
    a = torch.zeros(2, 1, 3, 3, dtype=torch.uint8)
    a[0, 0, :, 0] = 1  # 3 px column in image 0
    a[1, 0, 0, :] = 1  # 3 px row in image 1 (would touch image 0's column if stacked as 3-D)
    areas = component_areas(a)
    assert areas.shape == (2, 1, 3, 3)
    assert areas[0, 0, :, 0].tolist() == [3, 3, 3]
    assert areas[1, 0, 0, :].tolist() == [3, 3, 3]
    with pytest.raises(ValueError):
        component_areas(torch.zeros(2, 2, 3, 3))


@pytest.fixture(params=[False, True], ids=["host-labelled", "on-device"])
def on_device(request) -> bool:
    """The video clean-up both ways: labelled on the host (the CPU's path) and decided with tensor ops (an
    accelerator's path, run here on the CPU): the same results."""
    return request.param


def test_fill_holes_in_mask_scores_fills_holes_and_removes_sprinkles(on_device):
    mask = _logits(
        [
            "..........",
            ".######...",
            ".#..###...",
            ".#..###...",
            ".######...",
            "..........",
            "........#.",
            "..........",
        ]
    )
    out = fill_holes_in_mask_scores(mask, max_area=4, on_device=on_device)
    # the 2x2 hole (area 4 <= 4) becomes weak foreground
    assert torch.all(out[0, 0, 2:4, 2:4] == 0.1)
    # the single-pixel speck (area 1 <= min(4, total_fg // 2)) becomes weak background
    assert out[0, 0, 6, 8] == pytest.approx(-0.1)
    # everything else is untouched
    changed = out != mask
    assert int(changed.sum()) == 5
    # the big outer background (area > 4) is untouched
    assert out[0, 0, 0, 0] == -5.0


def test_fill_holes_keeps_a_tiny_lone_object_because_of_the_half_area_cap(on_device):
    mask = _logits([".....", ".##..", ".....", "....."])  # 2 px object, the only foreground
    out = fill_holes_in_mask_scores(mask, max_area=16, on_device=on_device)
    # limit = min(16, 2 // 2 = 1) < 2: the object survives
    assert torch.equal(out, mask)


def test_fill_holes_hole_bigger_than_max_area_is_kept_and_odd_sizes_work(on_device):
    mask = _logits(
        [
            "#######",
            "#.....#",
            "#.....#",
            "#######",
            "#######",
        ]
    )  # 5 x 7: odd sizes; hole area 10
    assert torch.equal(fill_holes_in_mask_scores(mask, max_area=9, on_device=on_device), mask)
    out = fill_holes_in_mask_scores(mask, max_area=10, on_device=on_device)
    assert torch.all(out[0, 0, 1:3, 1:6] == 0.1)


def test_fill_holes_switches_and_zero_area(on_device):
    mask = _logits(["#.#", "...", "..#"])
    assert fill_holes_in_mask_scores(mask, max_area=0, on_device=on_device) is mask
    only_holes = fill_holes_in_mask_scores(mask, max_area=100, remove_sprinkles=False, on_device=on_device)
    assert torch.all(only_holes > 0)  # the whole background is one component of area 6 <= 100
    only_specks = fill_holes_in_mask_scores(mask, max_area=100, fill_holes=False, on_device=on_device)
    # total fg 3 -> limit 1: every single-pixel blob goes
    assert torch.all(only_specks <= 0)


def test_fill_small_components_sam1_flavour():
    big = torch.full((1, 1, 40, 40), 3.0)
    big[0, 0, 5:21, 5:21] = -2.0  # hole of area 256: filled
    big[0, 0, 25:35, 25:36] = -2.0  # hole of area 110 ... also filled
    big[0, 0, 0:17, 30:40] = -1.0  # touches the border, area 170: still a hole (no border rule)
    out = fill_small_components(big, max_hole_area=256)
    assert torch.all(out[0, 0, 5:21, 5:21] == 10.0)
    assert torch.all(out[0, 0, 25:35, 25:36] == 10.0)
    assert torch.all(out[0, 0, 0:17, 30:40] == 10.0)

    bigger = torch.full((1, 1, 40, 40), 3.0)
    bigger[0, 0, 0:17, 0:16] = -2.0  # area 272 > 256: kept
    assert torch.equal(fill_small_components(bigger, max_hole_area=256), bigger)

    specks = torch.full((1, 2, 8, 8), -4.0)
    specks[0, 1, 3, 3] = 1.0
    out = fill_small_components(specks, max_hole_area=0, max_sprinkle_area=1, threshold=0.5)
    assert out[0, 1, 3, 3] == pytest.approx(0.5 - 10.0)
    assert torch.equal(out[0, 0], specks[0, 0])


def _two_step_reference(mask: torch.Tensor, max_area: float) -> torch.Tensor:
    """The clean-up as the official code writes it: label, fill, then label the filled mask, remove."""
    background = mask <= 0
    areas = component_areas(background)
    mask = torch.where(background & (areas <= max_area), 0.1, mask)
    foreground = mask > 0
    limit = torch.div(foreground.sum(dim=(2, 3), keepdim=True, dtype=torch.int32), 2, rounding_mode="floor")
    areas = component_areas(foreground)
    return torch.where(foreground & (areas <= limit.clamp(max=max_area)), -0.1, mask)


@pytest.mark.parametrize("seed", range(5))
def test_one_read_clean_up_is_the_two_step_rule(seed, on_device):
    g = torch.Generator().manual_seed(seed)
    mask = torch.randn(4, 1, 40, 52, generator=g)  # speckled: many small components of both kinds
    mask[1] = torch.nn.functional.interpolate(torch.randn(1, 1, 6, 7, generator=g), size=(40, 52), mode="bilinear")
    mask[2, 0, 10:14, 10:14] = float("nan")  # neither foreground nor background, as in the reference
    for max_area in (3, 8, 40):
        out = fill_holes_in_mask_scores(mask, max_area=max_area, on_device=on_device)
        torch.testing.assert_close(out, _two_step_reference(mask, max_area), rtol=0, atol=0, equal_nan=True)
    assert fill_holes_in_mask_scores(mask, max_area=0, on_device=on_device) is mask  # off: the logits untouched
