"""sam3.ops.small_components: small 8-connected components decided with tensor ops, against scikit-image's labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.measure import label

from sam3.ops.small_components import small_components


def _reference(binary: torch.Tensor, limits) -> torch.Tensor:
    """Label each plane with scikit-image (8-connected), keep the components of area <= the plane's limit."""
    out = []
    for plane, limit in zip(binary.numpy(), np.broadcast_to(np.asarray(limits), (binary.shape[0],))):
        labels = label(plane, connectivity=2)
        areas = np.bincount(labels.ravel())
        areas[0] = 0
        out.append(plane & (areas[labels] <= limit))
    return torch.from_numpy(np.stack(out))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("density", [0.3, 0.55, 0.75])
def test_random_masks_give_scikit_images_small_components(seed, density):
    g = torch.Generator().manual_seed(seed)
    binary = torch.rand(3, 37, 53, generator=g) < density  # many components, of every size, touching diagonally
    for max_area in (1, 2, 5, 16, 40):
        np.testing.assert_array_equal(small_components(binary, max_area, max_area), _reference(binary, max_area))
    limits = torch.tensor([0, 3, 16])  # one limit per plane, up to max_area
    np.testing.assert_array_equal(small_components(binary, limits, 16), _reference(binary, limits.numpy()))


def _snake(length: int, width: int = 40) -> torch.Tensor:
    """(1, H, W): a one-pixel path ``length`` pixels long winding down the plane (far more than ``length`` / 2
    steps across when it is long: the case a too-short propagation would take for small)."""
    plane = torch.zeros(1, 2 * (length // width + 2), width, dtype=torch.bool)
    row, col, step, left = 0, 0, 1, length
    while left > 0:
        plane[0, row, col] = True
        left -= 1
        if 0 <= col + step < width:
            col += step
        else:  # down two rows through one joining pixel, then back the other way
            row += 1
            if left > 0:
                plane[0, row, col] = True
                left -= 1
            row, step = row + 1, -step
    return plane


@pytest.mark.parametrize("length", [15, 16, 17, 60, 200])
def test_long_thin_components_are_small_only_up_to_the_limit(length):
    snake = _snake(length)
    assert int(snake.sum()) == length
    small = small_components(snake, 16, 16)
    assert bool(small.any()) == (length <= 16)
    np.testing.assert_array_equal(small, _reference(snake, 16))


def test_diagonal_neighbours_join_and_planes_are_labelled_alone():
    plane = torch.zeros(2, 6, 6, dtype=torch.bool)
    plane[0, 0, 0] = plane[0, 1, 1] = plane[0, 2, 2] = True  # one 3-pixel component (8-connected)
    plane[1, 0, 0] = True  # the same pixel in another plane: its own 1-pixel component
    assert small_components(plane, 2, 3)[0].sum() == 0
    assert small_components(plane, 3, 3)[0].sum() == 3
    assert small_components(plane, 1, 3)[1, 0, 0]


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(P, H, W\)"):
        small_components(torch.zeros(4, 4, dtype=torch.bool), 1, 1)
