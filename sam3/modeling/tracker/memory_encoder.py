"""Memory encoder: fuse a frame's level-2 features with its predicted mask into a memory map.

The mask (logit-scaled, full input-mask resolution, 4 x the low-res mask side) is brought down
16x by four stride-2 conv / LayerNorm2d / GELU stages (1 -> 4 -> 16 -> 64 -> 256 channels) and a
1x1 projection, added to the projected image features, refined by two ConvNeXt blocks and
compressed to ``mem_dim`` channels. Its position encoding is a ``mem_dim``-channel 2-D sine map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam3.config import Sam3Config
from sam3.modeling.layers.norm import LayerNorm2d
from sam3.modeling.layers.position_encoding import PositionEmbeddingSine


class MaskDownSampler(nn.Module):
    """(B, 1, S, S) mask -> (B, C, S/16, S/16), after resizing the mask to ``input_size`` if needed."""

    def __init__(self, embed_dim: int, input_size: int, num_stages: int = 4, stride: int = 2):
        super().__init__()
        self.input_size = input_size
        layers: list[nn.Module] = []
        chans = 1
        for _ in range(num_stages):
            out = chans * stride * stride  # channels grow as fast as the area shrinks
            layers += [nn.Conv2d(chans, out, kernel_size=3, stride=stride, padding=1), LayerNorm2d(out), nn.GELU()]
            chans = out
        layers.append(nn.Conv2d(chans, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        if tuple(mask.shape[-2:]) != (self.input_size, self.input_size):
            # Masks may come at the image size (e.g. 1008) rather than the 1152 grid the strides expect.
            size = (self.input_size, self.input_size)
            mask = F.interpolate(mask.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.encoder(mask)


class CXBlock(nn.Module):
    """ConvNeXt block: x + gamma * pw2(GELU(pw1(LN(dw7x7(x))))), on (B, C, H, W)."""

    def __init__(self, dim: int, kernel_size: int = 7, layer_scale_init: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last for the pointwise linears, made contiguous: on a permuted 4-D input torch's matmul may
        # broadcast the weight over every row of the batch and copy it (under CPU bf16 autocast: 134 MB a call
        # at 16 objects of the tiny preset)
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1).contiguous()
        y = self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """A stack of ConvNeXt blocks (``layers.i``)."""

    def __init__(self, dim: int, num_layers: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """(pix_feat (B, C, g, g), mask (B, 1, S, S) scaled logits) -> (memory (B, mem_dim, g, g), pos (B, mem_dim, g, g)).

    The mask is used as given (the caller applies sigmoid / threshold, scale and bias). ``pix_feat`` may be one
    frame expanded over the B masks (batch stride 0): it is projected once.
    """

    def __init__(self, config: Sam3Config):
        super().__init__()
        c, mem_dim = config.d_model, config.tracker.mem_dim
        self.mask_downsampler = MaskDownSampler(c, input_size=config.input_mask_size)
        self.pix_feat_proj = nn.Conv2d(c, c, kernel_size=1)
        self.fuser = Fuser(c, num_layers=2)
        self.out_proj = nn.Conv2d(c, mem_dim, kernel_size=1)
        self.position_encoding = PositionEmbeddingSine(mem_dim)

    def forward(self, pix_feat: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask_emb = self.mask_downsampler(mask)
        if pix_feat.shape[0] > 1 and pix_feat.stride(0) == 0:  # one frame broadcast over the objects: once
            pix_feat = pix_feat[:1]
        x = self.pix_feat_proj(pix_feat) + mask_emb
        x = self.out_proj(self.fuser(x))
        pos = self.position_encoding(x).to(x.dtype)
        return x, pos
