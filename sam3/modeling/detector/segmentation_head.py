"""Instance mask head of the detector: a small FPN pixel decoder and a per-query dot product.

The fused image memory first attends to the prompt (one residual cross-attention), then replaces
the stride-14 level of the neck as the coarsest input of the pixel decoder, which upsamples it
(nearest) through the stride-7 and stride-3.5 levels. Each query's ``mask_embed`` is dotted with
the per-pixel ``instance_seg_head`` features to give (4g x 4g) mask logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam3.config import ScoringConfig
from sam3.modeling.layers.attention import MultiheadAttention
from sam3.modeling.layers.mlp import MLP


class PixelDecoder(nn.Module):
    """Top-down FPN: at each finer level, ``relu(GN(conv3x3(level + nearest_up(previous))))``.

    ``num_stages`` conv/norm pairs are built (the checkpoint holds 3), but a call uses only as many
    as it gets finer levels (2 for the detector), coarse-to-fine in index order.
    """

    def __init__(self, dim: int, num_stages: int):
        super().__init__()
        self.conv_layers = nn.ModuleList(nn.Conv2d(dim, dim, 3, padding=1) for _ in range(num_stages))
        self.norms = nn.ModuleList(nn.GroupNorm(8, dim) for _ in range(num_stages))

    def forward(self, coarse: torch.Tensor, finer: list[torch.Tensor]) -> torch.Tensor:
        """coarse (B, C, h, w); finer: levels from coarse to fine, each (B, C, h_i, w_i) -> (B, C, h_last, w_last)."""
        if len(finer) > len(self.conv_layers):
            raise ValueError(f"{len(finer)} levels given, but only {len(self.conv_layers)} stages exist")
        x = coarse
        for conv, norm, feat in zip(self.conv_layers, self.norms, finer):
            x = feat + F.interpolate(x, size=feat.shape[-2:], mode="nearest")
            x = F.relu(norm(conv(x)))
        return x


class MaskPredictor(nn.Module):
    """Query embeddings (B, Q, C) . pixel embeddings (B, C, H, W) -> mask logits (B, Q, H, W)."""

    def __init__(self, dim: int):
        super().__init__()
        self.mask_embed = MLP(dim, dim, dim, 3)

    def forward(self, queries: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bqc,bchw->bqhw", self.mask_embed(queries), pixels)


class SegmentationHead(nn.Module):
    """Mask head. Parameter names follow ``detector.segmentation_head.*`` of ``sam3.pt``.

    ``semantic_seg_head`` (one class-agnostic semantic logit map) is part of the checkpoint but no
    inference path uses it; it is kept for strict loading and exposed by ``semantic_logits``.
    """

    def __init__(self, cfg: ScoringConfig, d_model: int = 256, num_heads: int = 8):
        super().__init__()
        self.pixel_decoder = PixelDecoder(d_model, cfg.pixel_decoder_stages)
        self.mask_predictor = MaskPredictor(d_model)
        self.cross_attend_prompt = MultiheadAttention(d_model, num_heads)
        self.cross_attn_norm = nn.LayerNorm(d_model)
        self.semantic_seg_head = nn.Conv2d(d_model, 1, kernel_size=1)
        self.instance_seg_head = nn.Conv2d(d_model, d_model, kernel_size=1)

    def pixel_embeddings(
        self,
        fpn: list[torch.Tensor],
        memory: torch.Tensor,
        feat_hw: tuple[int, int],
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Pixel-decoder output (B, C, 4g, 4g), before ``instance_seg_head``.

        fpn: [l0 (B, C, 4g, 4g), l1 (B, C, 2g, 2g)]; memory (B, g*g, C); prompt (B, L, C); prompt_mask (B, L).
        """
        b, _, c = memory.shape
        h, w = (int(s) for s in feat_hw)
        attended = self.cross_attend_prompt(self.cross_attn_norm(memory), prompt, prompt, key_padding_mask=prompt_mask)
        coarse = (memory + attended).transpose(1, 2).reshape(b, c, h, w)
        return self.pixel_decoder(coarse, list(fpn)[::-1])

    def semantic_logits(self, pixel_embed: torch.Tensor) -> torch.Tensor:
        """(B, C, 4g, 4g) pixel embeddings -> (B, 1, 4g, 4g) semantic logits (unused by inference)."""
        return self.semantic_seg_head(pixel_embed)

    def forward(
        self,
        fpn: list[torch.Tensor],
        memory: torch.Tensor,
        feat_hw: tuple[int, int],
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor | None,
        queries: torch.Tensor,
    ) -> torch.Tensor:
        """
        fpn:         [l0 (B, C, 4g, 4g), l1 (B, C, 2g, 2g)] detector neck levels
        memory:      (B, g*g, C) fusion-encoder output
        feat_hw:     (g, g)
        prompt:      (B, L, C), prompt_mask (B, L) bool True = padding
        queries:     (B, Q, C) last decoder layer's normalised query states
        returns      (B, Q, 4g, 4g) mask logits
        """
        pixels = self.pixel_embeddings(fpn, memory, feat_hw, prompt, prompt_mask)
        return self.mask_predictor(queries, self.instance_seg_head(pixels))
