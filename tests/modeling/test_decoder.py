"""DetrDecoder at the tiny preset: shapes, masking, batching, init semantics and checkpoint names."""

from __future__ import annotations

import pytest
import torch

from sam3.config import get_config
from sam3.modeling.detector.decoder import DetrDecoder
from sam3.modeling.outputs import DecoderOutput
from tests.conftest import checkpoint_shapes

PREFIX = "detector.transformer.decoder."


def _inputs(cfg, batch: int = 2, prompt_len: int = 9, hw: tuple[int, int] | None = None, seed: int = 0):
    g = cfg.feature_size
    h, w = hw or (g, g)
    gen = torch.Generator().manual_seed(seed)
    c = cfg.d_model
    memory = torch.randn(batch, h * w, c, generator=gen)
    pos = torch.randn(batch, h * w, c, generator=gen)
    prompt = torch.randn(batch, prompt_len, c, generator=gen)
    prompt_mask = torch.zeros(batch, prompt_len, dtype=torch.bool)
    prompt_mask[-1, prompt_len // 2 :] = True  # the last element has padding
    return memory, pos, prompt, prompt_mask, (h, w)


@pytest.fixture(scope="module")
def decoder(tiny):
    torch.manual_seed(0)
    dec = DetrDecoder(tiny.decoder, tiny.d_model).eval()
    with torch.no_grad():  # a non-identity box head, so refinement actually moves the boxes
        dec.bbox_embed.layers[-1].weight.normal_(0, 0.02)
    return dec


def test_output_shapes_and_ranges(tiny, decoder):
    memory, pos, prompt, prompt_mask, hw = _inputs(tiny)
    with torch.no_grad():
        out = decoder(memory, pos, prompt, prompt_mask, hw)
    d, q, c = tiny.decoder.num_layers, tiny.decoder.num_queries, tiny.d_model
    assert isinstance(out, DecoderOutput)
    assert out.hs.shape == (d, 2, q, c)
    assert out.reference_boxes.shape == (d, 2, q, 4)
    assert out.presence_logits.shape == (d, 2, 1)
    assert torch.isfinite(out.hs).all() and torch.isfinite(out.presence_logits).all()
    # hs went through the shared LayerNorm (unit affine at init).
    assert torch.allclose(out.hs.mean(-1), torch.zeros(()), atol=1e-5)
    # Layer 0 starts from sigmoid(reference_points); later layers from refined boxes in (0, 1).
    first = decoder.reference_points.weight.sigmoid().expand(2, -1, -1)
    assert torch.allclose(out.reference_boxes[0], first)
    assert not torch.allclose(out.reference_boxes[1], out.reference_boxes[0])
    assert ((out.reference_boxes > 0) & (out.reference_boxes < 1)).all()


def test_fresh_init_refines_as_identity(tiny):
    # The box head's last layer starts at zero: every layer keeps its reference box.
    dec = DetrDecoder(tiny.decoder, tiny.d_model).eval()
    with torch.no_grad():
        out = dec(*_inputs(tiny))
    assert torch.allclose(out.reference_boxes, out.reference_boxes[:1].expand_as(out.reference_boxes), atol=1e-6)


def test_padded_prompt_tokens_are_ignored_and_batch_elements_are_independent(tiny, decoder):
    memory, pos, prompt, prompt_mask, hw = _inputs(tiny)
    with torch.no_grad():
        out = decoder(memory, pos, prompt, prompt_mask, hw)
        noisy = prompt.clone()
        noisy[prompt_mask] = 100.0
        out_noisy = decoder(memory, pos, noisy, prompt_mask, hw)
        single = decoder(memory[1:], pos[1:], prompt[1:], prompt_mask[1:], hw)
    assert torch.allclose(out.hs, out_noisy.hs, atol=1e-5)
    assert torch.allclose(out.hs[:, 1:], single.hs, atol=1e-5)
    assert torch.allclose(out.reference_boxes[:, 1:], single.reference_boxes, atol=1e-6)
    assert torch.allclose(out.presence_logits[:, 1:], single.presence_logits, atol=1e-5)


def test_non_square_grid_and_boxes_follow_the_memory(tiny, decoder):
    # The box bias is built per call from feat_hw; a non-square grid must not be confused with its transpose.
    memory, pos, prompt, prompt_mask, hw = _inputs(tiny, hw=(6, 10))
    with torch.no_grad():
        out = decoder(memory, pos, prompt, prompt_mask, hw)
        swapped = decoder(memory, pos, prompt, prompt_mask, (10, 6))
    assert out.hs.shape[2] == tiny.decoder.num_queries
    assert not torch.allclose(out.hs, swapped.hs)


def test_box_bias_is_symmetric_for_a_centred_square_box(tiny):
    # With equal x and y embedding MLPs, bias[row i, col j] = f(dy_i) + f(dx_j) is symmetric under i <-> j.
    dec = DetrDecoder(tiny.decoder, tiny.d_model)
    dec.boxRPB_embed_x.load_state_dict(dec.boxRPB_embed_y.state_dict())
    box = torch.tensor([[[0.5, 0.5, 0.25, 0.25]]])
    with torch.no_grad():
        bias = dec._box_bias(box, (8, 8))  # (1, heads, 1, 64)
    assert bias.shape == (1, tiny.decoder.num_heads, 1, 64)
    grid = bias.view(tiny.decoder.num_heads, 8, 8)
    assert torch.allclose(grid, grid.transpose(1, 2), atol=1e-6)


def test_reference_boxes_are_detached_between_layers(tiny, decoder):
    # The query states depend on the box head only through the refined boxes the next layer starts
    # from; detaching those boxes cuts that path, while the reported boxes keep their gradient.
    memory, pos, prompt, prompt_mask, hw = _inputs(tiny, batch=1)
    dec = DetrDecoder(tiny.decoder, tiny.d_model)
    dec.load_state_dict(decoder.state_dict())
    out = dec(memory, pos, prompt, prompt_mask, hw)
    (grad,) = torch.autograd.grad(out.reference_boxes[1].sum(), dec.bbox_embed.layers[-1].bias)
    assert grad.abs().sum() > 0
    box_grad = torch.autograd.grad(out.hs[-1].sum(), dec.bbox_embed.layers[-1].bias, allow_unused=True)[0]
    assert box_grad is None or box_grad.abs().sum() == 0


def test_no_buffers_and_meta_construction(tiny):
    with torch.device("meta"):
        dec = DetrDecoder(tiny.decoder, tiny.d_model)
    assert list(dec.buffers()) == []
    assert all(p.is_meta for p in dec.parameters())


def test_state_dict_matches_checkpoint_names_at_sam3_preset():
    cfg = get_config("sam3")
    with torch.device("meta"):
        dec = DetrDecoder(cfg.decoder, cfg.d_model)
    expected = checkpoint_shapes(PREFIX)
    ours = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    assert ours == expected
