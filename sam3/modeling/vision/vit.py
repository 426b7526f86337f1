"""ViT trunk (ViTDet style): patch embedding, tiled absolute position table, windowed and global
attention blocks with 2-D RoPE. Images (B, 3, S, S) -> features (B, embed_dim, S/p, S/p).

Parameter names follow the checkpoint (``detector.backbone.vision_backbone.trunk.*``):
``patch_embed.proj``, ``pos_embed``, ``ln_pre``, ``blocks.i.{norm1, attn.{qkv, proj, freqs_cis}, norm2,
mlp.{fc1, fc2}}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam3.config import VisionConfig
from sam3.modeling.vision.rope import apply_axial_rope, axial_rope_table


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) -> (B, H/p, W/p, C) channels-last."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Mlp(nn.Module):
    """fc1 -> GELU (exact erf form) -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class RopeAttention(nn.Module):
    """Multi-head self-attention over a token grid with axial RoPE on q and k.

    x (N, h, w, C) -> (N, h, w, C). ``freqs_cis`` is the rotation table for the grid this block is
    built for (a window, or the whole feature map); another grid size gets a table computed on the fly.
    """

    def __init__(self, dim: int, num_heads: int, grid: int, rope_scale: float, rope_theta: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.rope_theta = rope_theta
        self.rope_reference = grid * rope_scale  # the grid extent the positions are scaled to
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer(
            "freqs_cis", axial_rope_table(self.head_dim, grid, grid, rope_scale, rope_theta), persistent=True
        )

    def _table(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        # Module.to(bf16/fp16) casts complex buffers to real ones, dropping the imaginary part.
        if self.freqs_cis.shape[0] == h * w and h == w and self.freqs_cis.is_complex():
            return self.freqs_cis
        # Another input size (global blocks only) keeps the same scaled position range.
        return axial_rope_table(self.head_dim, h, w, self.rope_reference / w, self.rope_theta, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        qkv = self.qkv(x).reshape(n, h * w, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, heads, L, d)
        q, k = apply_axial_rope(q, k, self._table(h, w, x.device))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, h, w, c))


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nWindows, window, window, C), zero-padding H and W up to multiples of window."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: -> (B, H, W, C) with the padding cut off."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(b, hp // window, wp // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, -1)[:, :h, :w]


class Block(nn.Module):
    """Pre-norm transformer block; ``window > 0`` restricts attention to non-overlapping windows.

    x (B, H, W, C) -> (B, H, W, C).
    """

    def __init__(self, cfg: VisionConfig, window: int):
        super().__init__()
        dim = cfg.embed_dim
        self.window = window
        grid = window if window > 0 else cfg.grid_size
        # Windows use their own 0..w-1 positions; global blocks squeeze the whole map into that range.
        rope_scale = 1.0 if window > 0 else cfg.window_size / cfg.grid_size
        self.norm1 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.attn = RopeAttention(dim, cfg.num_heads, grid, rope_scale, cfg.rope_theta)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(dim, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window > 0:
            h, w = y.shape[1:3]
            y, padded_hw = window_partition(y, self.window)
            y = window_unpartition(self.attn(y), self.window, padded_hw, (h, w))
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """The vision trunk. images (B, 3, S, S) normalised -> (B, embed_dim, S/p, S/p).

    The absolute position table is stored at the pretraining grid (with a cls slot, which is
    dropped) and *tiled*, not interpolated, to the input grid. The output is the map after the last
    block, which must be a global-attention block (the trunk's output in the released model).
    """

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        if max(cfg.global_blocks) != cfg.depth - 1:
            raise ValueError("the last ViT block must be a global-attention block (it gives the trunk output)")
        self.cfg = cfg
        pretrain_grid = cfg.pretrain_image_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pretrain_grid * pretrain_grid, cfg.embed_dim))
        self.ln_pre = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.blocks = nn.ModuleList(
            Block(cfg, 0 if i in cfg.global_blocks else cfg.window_size) for i in range(cfg.depth)
        )
        self._init_weights()

    @property
    def out_channels(self) -> int:
        return self.cfg.embed_dim

    def _init_weights(self) -> None:
        if self.pos_embed.is_meta:
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def abs_pos(self, h: int, w: int) -> torch.Tensor:
        """The position table tiled to an (h, w) grid -> (1, h, w, C)."""
        table = self.pos_embed[:, 1:]
        p = int(round(table.shape[1] ** 0.5))
        table = table.reshape(1, p, p, -1)
        if (p, p) != (h, w):
            table = table.repeat(1, h // p + 1, w // p + 1, 1)[:, :h, :w]
        return table

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        x = x + self.abs_pos(x.shape[1], x.shape[2])
        x = self.ln_pre(x)
        for block in self.blocks:
            x = block(x)
        return x.permute(0, 3, 1, 2)
