"""SegmentationHead at the tiny preset: shapes, which levels it uses, masking, and checkpoint names."""

from __future__ import annotations

import pytest
import torch

from sam3.config import get_config
from sam3.modeling.detector.segmentation_head import SegmentationHead
from tests.conftest import checkpoint_shapes

PREFIX = "detector.segmentation_head."


@pytest.fixture(scope="module")
def head(tiny):
    torch.manual_seed(0)
    return SegmentationHead(tiny.scoring, tiny.d_model).eval()


def _inputs(cfg, batch: int = 2, prompt_len: int = 9, num_queries: int = 5, seed: int = 0):
    g, c = cfg.feature_size, cfg.d_model
    gen = torch.Generator().manual_seed(seed)
    fpn = [torch.randn(batch, c, 4 * g, 4 * g, generator=gen), torch.randn(batch, c, 2 * g, 2 * g, generator=gen)]
    memory = torch.randn(batch, g * g, c, generator=gen)
    prompt = torch.randn(batch, prompt_len, c, generator=gen)
    prompt_mask = torch.zeros(batch, prompt_len, dtype=torch.bool)
    prompt_mask[-1, prompt_len // 2 :] = True
    queries = torch.randn(batch, num_queries, c, generator=gen)
    return fpn, memory, (g, g), prompt, prompt_mask, queries


def test_mask_logit_shape(tiny, head):
    fpn, memory, hw, prompt, prompt_mask, queries = _inputs(tiny)
    with torch.no_grad():
        masks = head(fpn, memory, hw, prompt, prompt_mask, queries)
    g = tiny.feature_size
    assert masks.shape == (2, 5, 4 * g, 4 * g)
    assert torch.isfinite(masks).all()


def test_padding_batching_and_levels(tiny, head):
    fpn, memory, hw, prompt, prompt_mask, queries = _inputs(tiny)
    with torch.no_grad():
        masks = head(fpn, memory, hw, prompt, prompt_mask, queries)
        noisy = prompt.clone()
        noisy[prompt_mask] = 100.0
        masks_noisy = head(fpn, memory, hw, noisy, prompt_mask, queries)
        single = head([f[1:] for f in fpn], memory[1:], hw, prompt[1:], prompt_mask[1:], queries[1:])
    assert torch.allclose(masks, masks_noisy, atol=1e-4)
    assert torch.allclose(masks[1:], single, atol=1e-4)


def test_only_two_pixel_decoder_stages_are_used(tiny, head):
    # The checkpoint holds three conv/GN stages; with two finer levels only stages 0 and 1 run.
    fpn, memory, hw, prompt, prompt_mask, queries = _inputs(tiny, batch=1)
    head.zero_grad()
    head(fpn, memory, hw, prompt, prompt_mask, queries).sum().backward()
    pd = head.pixel_decoder
    assert pd.conv_layers[0].weight.grad is not None and pd.conv_layers[1].weight.grad is not None
    assert pd.conv_layers[2].weight.grad is None and pd.norms[2].weight.grad is None
    assert head.semantic_seg_head.weight.grad is None
    head.zero_grad()


def test_meta_construction_and_checkpoint_names_at_sam3_preset():
    cfg = get_config("sam3")
    with torch.device("meta"):
        head = SegmentationHead(cfg.scoring, cfg.d_model)
    assert list(head.buffers()) == []
    expected = checkpoint_shapes(PREFIX)
    assert {k: tuple(v.shape) for k, v in head.state_dict().items()} == expected
