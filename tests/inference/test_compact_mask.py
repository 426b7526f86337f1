"""A session's stored masks (sam3.inference.video_state.CompactMask): run-length encoded, decoded to the same
pixels, from tensors or host arrays of any layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam3.inference.video_state import CompactMask


@pytest.mark.parametrize("shape", [(1, 720, 1280), (45, 37), (1, 1, 9)])
def test_round_trip_from_tensors_and_arrays(shape):
    g = torch.Generator().manual_seed(sum(shape))
    logits = torch.randn(1, 1, 8, 8, generator=g)
    mask = torch.nn.functional.interpolate(logits, size=shape[-2:], mode="bilinear")[0] > 0.3  # blobs
    mask = mask.reshape(shape)
    plane = mask.reshape(shape[-2:])
    sources = [mask, mask.numpy(), plane.numpy(), plane.t().contiguous().t()]  # the last one column-major
    for source in sources:
        stored = CompactMask(source)
        back = stored.decode()
        assert back.shape == (1, *shape[-2:]) and back.dtype == torch.bool and back.is_contiguous()
        assert torch.equal(back[0], plane)
        assert stored.nbytes() < plane.numel() // 8 + 64 or shape[-1] < 16  # compact for blob-like masks


def test_empty_and_full_masks():
    for value in (False, True):
        mask = torch.full((1, 33, 50), value)
        assert torch.equal(CompactMask(mask).decode(), mask)


def test_a_strided_view_of_a_larger_mask():
    full = np.random.default_rng(0).random((60, 80)) > 0.5
    view = full[5:50:2, 3:70]
    assert torch.equal(CompactMask(view).decode()[0], torch.from_numpy(np.ascontiguousarray(view)))
