"""Multiplex memory encoder: one memory map per bucket, from the frame's features and the bucket's masks.

The masks of the M objects of a bucket enter as channels, together with one "conditioning" channel per
object (1 where the object's mask came from a prompt or a detection on this frame): (B, 2M, S, S). Four
stride-2 conv / LayerNorm2d / GELU stages (2M -> 16 -> 64 -> 256 -> 1024 channels) and a 1x1 projection
bring them to the feature grid; they are added to the projected image features and refined by two
ConvNeXt blocks (shared with SAM 3's memory encoder). The memory keeps the full width (no projection).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam3.config_multiplex import Sam31Config
from sam3.modeling.layers.norm import LayerNorm2d
from sam3.modeling.layers.position_encoding import PositionEmbeddingSine
from sam3.modeling.tracker.memory_encoder import Fuser


class MultiplexMaskDownSampler(nn.Module):
    """(B, in_chans, S, S) -> (B, embed_dim, S/16, S/16), after resizing to ``input_size`` if needed."""

    def __init__(self, in_chans: int, start_chans: int, embed_dim: int, input_size: int, num_stages: int = 4):
        super().__init__()
        self.input_size = input_size
        layers: list[nn.Module] = []
        chans, out = in_chans, start_chans
        for _ in range(num_stages):
            out = out * 4  # channels grow as fast as the area shrinks
            layers += [nn.Conv2d(chans, out, kernel_size=3, stride=2, padding=1), LayerNorm2d(out), nn.GELU()]
            chans = out
        layers.append(nn.Conv2d(chans, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        if tuple(masks.shape[-2:]) != (self.input_size, self.input_size):
            size = (self.input_size, self.input_size)
            masks = F.interpolate(masks.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.encoder(masks)


class MultiplexMemoryEncoder(nn.Module):
    """(pix_feat (B, C, g, g), masks (B, 2M, S, S) already scaled) -> (memory (B, C, g, g), pos (B, C, g, g))."""

    def __init__(self, config: Sam31Config):
        super().__init__()
        c, t = config.d_model, config.tracker
        self.mask_downsampler = MultiplexMaskDownSampler(
            t.multiplex_count * t.mask_channels_per_object, t.mask_downsampler_start_chans, c, config.input_mask_size
        )
        self.pix_feat_proj = nn.Conv2d(c, c, kernel_size=1)
        self.fuser = Fuser(c, num_layers=2)
        self.position_encoding = PositionEmbeddingSine(c)

    def forward(self, pix_feat: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.fuser(self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks))
        return x, self.position_encoding(x).to(x.dtype)
