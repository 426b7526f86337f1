"""FusionEncoder at the tiny preset: shapes, prompt padding, no final norm, and the layer math
checked against an independent pre-norm layer written on ``torch.nn.MultiheadAttention``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sam3.config import get_config
from sam3.modeling.detector.fusion_encoder import FusionEncoder, FusionEncoderLayer


@pytest.fixture(scope="module")
def encoder(tiny):
    torch.manual_seed(0)
    enc = FusionEncoder(tiny.encoder, tiny.d_model).eval()
    with torch.no_grad():  # non-trivial norms and biases so an ordering slip shows up
        for name, p in enc.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return enc


def _inputs(cfg, batch=2, prompt_len=9, seed=0):
    g = cfg.feature_size
    gen = torch.Generator().manual_seed(seed)
    c = cfg.d_model
    src = torch.randn(batch, g * g, c, generator=gen)
    pos = torch.randn(batch, g * g, c, generator=gen)
    prompt = torch.randn(batch, prompt_len, c, generator=gen)
    mask = torch.zeros(batch, prompt_len, dtype=torch.bool)
    mask[-1, 4:] = True
    return src, pos, prompt, mask


def test_shapes(tiny, encoder):
    src, pos, prompt, mask = _inputs(tiny)
    with torch.no_grad():
        out = encoder(src, pos, prompt, mask)
    assert out.shape == src.shape
    assert torch.isfinite(out).all()
    # No final LayerNorm: every parameter lives in a layer.
    assert all(k.startswith("layers.") for k in encoder.state_dict())


def test_padded_prompt_tokens_are_ignored_and_batch_is_independent(tiny, encoder):
    src, pos, prompt, mask = _inputs(tiny)
    noisy = prompt.clone()
    noisy[mask] = 100.0
    with torch.no_grad():
        a = encoder(src, pos, prompt, mask)
        b = encoder(src, pos, noisy, mask)
        alone = encoder(src[1:], pos[1:], prompt[1:, :4], None)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a[1:], alone, atol=1e-5, rtol=1e-5)


class _ReferenceLayer(nn.Module):
    """Pre-norm layer on nn.MultiheadAttention: SA(q=k=LN1(x)+pos, v=LN1(x)), CA(q=LN2(x), k=v=prompt), FFN(LN3(x))."""

    def __init__(self, ours: FusionEncoderLayer, heads: int):
        super().__init__()
        c = ours.linear1.in_features
        self.sa = nn.MultiheadAttention(c, heads, batch_first=True)
        self.ca = nn.MultiheadAttention(c, heads, batch_first=True)
        self.sa.load_state_dict(ours.self_attn.state_dict())
        self.ca.load_state_dict(ours.cross_attn_image.state_dict())
        self.ours = ours

    def forward(self, x, pos, prompt, mask):
        o = self.ours
        y = o.norm1(x)
        x = x + self.sa(y + pos, y + pos, y, need_weights=False)[0]
        y = o.norm2(x)
        x = x + self.ca(y, prompt, prompt, key_padding_mask=mask, need_weights=False)[0]
        return x + o.linear2(F.relu(o.linear1(o.norm3(x))))


def test_matches_independent_reference(tiny, encoder):
    src, pos, prompt, mask = _inputs(tiny)
    refs = [_ReferenceLayer(layer, tiny.encoder.num_heads).eval() for layer in encoder.layers]
    with torch.no_grad():
        x = src
        for ref in refs:
            x = ref(x, pos, prompt, mask)
        out = encoder(src, pos, prompt, mask)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)


def test_builds_on_meta_device():
    with torch.device("meta"):
        enc = FusionEncoder(get_config("sam3").encoder, 256)
    assert len(enc.layers) == 6
    assert sum(p.numel() for p in enc.parameters()) == 9_472_512  # spec section 8
