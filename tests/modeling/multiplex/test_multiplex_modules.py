"""SAM 3.1's multiplex modules at the tiny preset without the oracle: bucket bookkeeping and the shapes of
one pass of the propagation heads for several buckets (the numbers are checked against upstream in
``tests/parity/test_sam31_heads_parity.py``)."""

from __future__ import annotations

import pytest
import torch

from sam3.build_multiplex import build_multiplex_model
from sam3.modeling.multiplex.multiplex_state import MultiplexState


def test_buckets_fill_then_open_and_removal_renumbers():
    state = MultiplexState(4)
    assert state.add_objects(6) == [0, 1, 2, 3, 4, 5]
    assert state.buckets == [[0, 1, 2, 3], [4, 5, -1, -1]]
    x = torch.arange(6.0).unsqueeze(1)
    muxed = state.mux(x)
    assert muxed.shape == (2, 4, 1) and muxed[1, 2:].eq(0).all()
    assert torch.equal(state.demux(muxed), x)
    assert state.remove_objects([0, 1, 2, 3]) == [1]  # the first bucket is empty: dropped
    assert state.buckets == [[0, 1, -1, -1]] and state.num_objects == 2
    state.remove_objects([1])
    assert state.add_objects(3) == [1, 2, 3]  # removed slots stay closed; free slots fill first
    assert state.buckets == [[0, -1116, 1, 2], [3, -1, -1, -1]]


def test_mux_rejects_the_wrong_number_of_objects():
    state = MultiplexState(4)
    state.add_objects(3)
    with pytest.raises(ValueError, match="3 objects"):
        state.mux(torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"\(1, 4, \.\.\.\)"):
        state.demux(torch.zeros(2, 4))


@torch.inference_mode()
def test_one_pass_of_the_propagation_heads_for_two_buckets():
    model = build_multiplex_model(preset="tiny", random_weights=True, device="cpu").eval()
    t = model.tracker.model
    m, g, c = t.multiplex_count, t.grid_size, t.hidden_dim
    state = MultiplexState(m)
    state.add_objects(m + 1)  # more objects than one bucket holds
    b = state.num_buckets
    image = torch.randn(b, c, g, g)
    skips = [
        t.sam_mask_decoder.conv_s0(torch.randn(b, c, 4 * g, 4 * g)),
        t.sam_mask_decoder.conv_s1(torch.randn(b, c, 2 * g, 2 * g)),
    ]
    out = t.sam_mask_decoder(image, t.get_dense_pe(), skips, t.slot_embeddings(state.valid_mask()))
    assert out.masks.shape == (b, m, 3, 4 * g, 4 * g) and out.iou.shape == (b, m, 3)
    assert state.demux(out.masks).shape == (m + 1, 3, 4 * g, 4 * g)
    memory, pos = t.maskmem_backbone(torch.randn(b, c, g, g), torch.rand(b, 2 * m, 16 * g, 16 * g))
    assert memory.shape == pos.shape == (b, c, g, g)
    hw = g * g
    mem = memory.flatten(2).transpose(1, 2)
    conditioned = t.memory_attention(
        torch.randn(1, hw, c), torch.randn(b, hw, c), torch.randn(b, hw, c), torch.randn(1, hw, c),
        torch.randn(1, hw, c), torch.cat([mem, torch.randn(b, 2, c)], 1), torch.randn(b, hw + 2, c), (g, g), 2,
    )  # fmt: skip
    assert conditioned.shape == (b, hw, c) and torch.isfinite(conditioned).all()
