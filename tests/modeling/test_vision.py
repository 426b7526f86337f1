"""ViT trunk, its 2-D RoPE and the dual FPN neck: shapes on the tiny preset, attention locality, the
tiled position table, and the state-dict layout of the released model (built on the meta device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from sam3.config import get_config
from sam3.modeling.layers.position_encoding import PositionEmbeddingSine
from sam3.modeling.vision.neck import DualFpnNeck
from sam3.modeling.vision.rope import apply_axial_rope, axial_rope_table
from sam3.modeling.vision.vit import Block, ViT
from sam3.modeling.vl_backbone import VisionLanguageBackbone
from tests.conftest import checkpoint_entries


def astronaut(size: int) -> torch.Tensor:
    """A real photo, resized and normalised to [-1, 1] -> (1, 3, size, size)."""
    img = Image.fromarray(data.astronaut()).resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    return (x - 0.5) / 0.5


@pytest.fixture(scope="module")
def neck(tiny):
    torch.manual_seed(0)
    return DualFpnNeck(ViT(tiny.vision), tiny.vision, tiny.d_model, with_sam2_neck=True).eval()


# --- RoPE -------------------------------------------------------------------------------------------


def test_rope_table_layout_and_scaling():
    window = axial_rope_table(64, 24, 24)
    glob = axial_rope_table(64, 72, 72, scale=24 / 72)
    assert window.shape == (576, 32) and glob.shape == (5184, 32)
    assert window.dtype == torch.complex64
    freqs = 1.0 / 10000 ** (torch.arange(16, dtype=torch.float32) * 4 / 64)
    # token 1 is (x=1, y=0): the first 16 rotations turn by freq, the last 16 not at all
    assert torch.allclose(torch.angle(window[1, :16]), freqs, atol=1e-6)
    assert torch.allclose(window[1, 16:], torch.ones(16, dtype=torch.complex64))
    # token 24 is (x=0, y=1)
    assert torch.allclose(window[24, :16], torch.ones(16, dtype=torch.complex64))
    assert torch.allclose(torch.angle(window[24, 16:]), freqs, atol=1e-6)
    # global positions are scaled by 1/3: global (x=3, y=6) == window (x=1, y=2)
    assert torch.allclose(glob[6 * 72 + 3], window[2 * 24 + 1], atol=1e-6)


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    table = axial_rope_table(32, 8, 8)
    q, k = torch.randn(1, 1, 64, 32), torch.randn(1, 1, 64, 32)
    # the same q/k vectors placed at every token
    qr, kr = apply_axial_rope(q[:, :, :1].expand(1, 1, 64, 32), k[:, :, :1].expand(1, 1, 64, 32), table)
    score = (qr[0, 0] @ kr[0, 0].T).reshape(8, 8, 8, 8)  # (yq, xq, yk, xk)
    assert torch.allclose(score[1, 2, 3, 5], score[2, 3, 4, 6], atol=1e-4)  # same offset (2, 3)
    assert torch.allclose(score[0, 0, 0, 0], score[7, 7, 7, 7], atol=1e-4)
    assert not torch.allclose(score[0, 0, 0, 1], score[0, 0, 1, 0], atol=1e-3)  # x and y differ
    assert torch.allclose(qr.norm(dim=-1), q[:, :, :1].norm(dim=-1).expand(1, 1, 64), atol=1e-4)


# --- ViT --------------------------------------------------------------------------------------------


def test_vit_on_a_real_image(tiny, neck):
    trunk = neck.trunk
    with torch.no_grad():
        out = trunk(astronaut(tiny.image_size)[None])
    g = tiny.feature_size
    assert out.shape == (1, tiny.vision.embed_dim, g, g)
    assert torch.isfinite(out).all() and out.std() > 0.1


def test_vit_buffers_follow_the_layout(tiny, neck):
    trunk = neck.trunk
    w, g, hd = tiny.vision.window_size, tiny.feature_size, tiny.vision.embed_dim // tiny.vision.num_heads
    for i, block in enumerate(trunk.blocks):
        side = g if i in tiny.vision.global_blocks else w
        scale = w / g if i in tiny.vision.global_blocks else 1.0
        assert block.attn.freqs_cis.shape == (side * side, hd // 2)
        assert torch.equal(block.attn.freqs_cis, axial_rope_table(hd, side, side, scale))
    assert trunk.patch_embed.proj.bias is None


def test_abs_pos_is_tiled_without_cls(neck, tiny):
    trunk = neck.trunk
    p = tiny.vision.pretrain_image_size // tiny.vision.patch_size
    g = tiny.feature_size
    pe = trunk.abs_pos(g, g)
    assert pe.shape == (1, g, g, tiny.vision.embed_dim)
    table = trunk.pos_embed[0, 1:].reshape(p, p, -1)
    assert torch.equal(pe[0, :p, :p], table)
    assert torch.equal(pe[0, p : 2 * p, p : 2 * p], table[: g - p, : g - p])
    # a grid that is not a multiple of the table is cropped from the tiling
    assert torch.equal(trunk.abs_pos(p + 3, p + 1)[0, p:, :1], table[:3, :1])


def test_window_attention_stays_in_its_window(tiny):
    torch.manual_seed(0)
    w, g, c = tiny.vision.window_size, tiny.feature_size, tiny.vision.embed_dim
    windowed, global_ = Block(tiny.vision, w).eval(), Block(tiny.vision, 0).eval()
    x = torch.randn(1, g, g, c)
    x2 = x.clone()
    x2[0, 1, 2] += torch.randn(c)  # a token inside the top-left window (not a constant: LayerNorm ignores that)
    with torch.no_grad():
        changed = (windowed(x2) - windowed(x)).abs().sum(-1)[0] > 0
        changed_global = (global_(x2) - global_(x)).abs().sum(-1)[0] > 0
    assert changed[:w, :w].all() and not changed[w:].any() and not changed[:, w:].any()
    assert changed_global.all()


def test_window_padding_path(tiny):
    """A grid that is not a multiple of the window (padded like the reference) still runs."""
    torch.manual_seed(0)
    block = Block(tiny.vision, tiny.vision.window_size).eval()
    with torch.no_grad():
        out = block(torch.randn(1, 11, 13, tiny.vision.embed_dim))
    assert out.shape == (1, 11, 13, tiny.vision.embed_dim) and torch.isfinite(out).all()


def test_last_block_must_be_global(tiny):
    import dataclasses

    with pytest.raises(ValueError):
        ViT(dataclasses.replace(tiny.vision, global_blocks=(1, 2)))


# --- neck -------------------------------------------------------------------------------------------


def test_neck_levels_and_positions(tiny, neck):
    torch.manual_seed(0)
    images = torch.stack([astronaut(tiny.image_size), torch.randn(3, tiny.image_size, tiny.image_size)])
    with torch.no_grad():
        feats = VisionLanguageBackbone(neck, None).forward_image(images)
    g, c = tiny.feature_size, tiny.d_model
    shapes = [(2, c, 4 * g, 4 * g), (2, c, 2 * g, 2 * g), (2, c, g, g)]
    assert [tuple(t.shape) for t in feats.fpn] == shapes
    assert [tuple(t.shape) for t in feats.pos] == shapes
    assert [tuple(t.shape) for t in feats.sam2_fpn] == shapes
    assert [tuple(t.shape) for t in feats.sam2_pos] == shapes
    pe = PositionEmbeddingSine(c)
    for level, pos in zip(feats.fpn, feats.pos):
        assert torch.equal(pos, pe(level))
    # the two necks have separate weights
    assert not torch.allclose(feats.fpn[2], feats.sam2_fpn[2])
    # batching does not mix images
    with torch.no_grad():
        single = neck(images[1:])
    for a, b in zip(feats.fpn, single.fpn):
        assert torch.allclose(a[1:], b, atol=1e-5)
    assert feats.batch_size == 2


def test_neck_without_tracker_branch(tiny):
    neck = DualFpnNeck(ViT(tiny.vision), tiny.vision, tiny.d_model, with_sam2_neck=False).eval()
    with torch.no_grad():
        feats = neck(torch.zeros(1, 3, tiny.image_size, tiny.image_size))
    assert neck.sam2_convs is None and feats.sam2_fpn is None and feats.sam2_pos is None
    assert len(feats.fpn) == len(tiny.vision.scale_factors) - tiny.vision.scalp


# --- checkpoint layout ------------------------------------------------------------------------------


@pytest.mark.parametrize("with_sam2_neck", [True, False])
def test_state_dict_matches_checkpoint_layout(with_sam2_neck):
    cfg = get_config("sam3")
    with torch.device("meta"):
        neck = DualFpnNeck(ViT(cfg.vision), cfg.vision, cfg.d_model, with_sam2_neck=with_sam2_neck)
    expected = checkpoint_entries("detector.backbone.vision_backbone.")
    if not with_sam2_neck:
        expected = {k: v for k, v in expected.items() if not k.startswith("sam2_convs.")}
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in neck.state_dict().items()}
    assert ours == expected
    assert expected["trunk.blocks.0.attn.freqs_cis"] == ((576, 32), "complex64")
    assert expected["trunk.blocks.31.attn.freqs_cis"] == ((5184, 32), "complex64")


def test_meta_construction_then_assign_load(tiny, neck):
    """The builder's path: construct on the meta device, then load real tensors with assign=True."""
    with torch.device("meta"):
        lazy = DualFpnNeck(ViT(tiny.vision), tiny.vision, tiny.d_model, with_sam2_neck=True)
    assert all(t.is_meta for t in lazy.state_dict().values())
    lazy.load_state_dict(neck.state_dict(), strict=True, assign=True)
    images = astronaut(tiny.image_size)[None]
    with torch.no_grad():
        a, b = lazy.eval()(images), neck(images)
    for x, y in zip(a.fpn + a.pos + a.sam2_fpn, b.fpn + b.pos + b.sam2_fpn):
        assert torch.equal(x, y)
