"""Sine position encodings (DETR style) for 2-D maps, boxes, points and 1-D time.

All functions compute on the device of their input; nothing is cached across devices.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _frequencies(num_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    """dim_t[i] = T^(2*(i//2)/num_feats), i in [0, num_feats)."""
    i = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(pos: torch.Tensor) -> torch.Tensor:
    """(..., F) angles -> (..., F) as [sin(a0), cos(a1), sin(a2), cos(a3), ...]."""
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """2-D sine encoding of a feature map: (B, C, H, W) -> (B, num_pos_feats, H, W).

    Channels are [y-encoding (F/2) | x-encoding (F/2)], each interleaved sin/cos; positions are
    (index + 1) / (size + 1e-6) * 2 pi. It has no parameters.
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError("num_pos_feats must be even")
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.scale = scale

    def encode_xy(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised coordinates (N,) each -> (N, F/2) encodings of x and of y."""
        dim_t = _frequencies(self.num_pos_feats, self.temperature, x.device)
        pos_x = _interleave_sin_cos(x[:, None] * self.scale / dim_t)
        pos_y = _interleave_sin_cos(y[:, None] * self.scale / dim_t)
        return pos_x, pos_y

    def encode_boxes(self, cx: torch.Tensor, cy: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Boxes (N,) each -> (N, F + 2) as [enc(cy) | enc(cx) | h | w]."""
        pos_x, pos_y = self.encode_xy(cx, cy)
        return torch.cat((pos_y, pos_x, h[:, None], w[:, None]), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        device = x.device
        eps = 1e-6
        y_embed = torch.arange(1, h + 1, dtype=torch.float32, device=device) / (h + eps) * self.scale
        x_embed = torch.arange(1, w + 1, dtype=torch.float32, device=device) / (w + eps) * self.scale
        dim_t = _frequencies(self.num_pos_feats, self.temperature, device)
        pos_y = _interleave_sin_cos(y_embed[:, None] / dim_t)  # (H, F/2)
        pos_x = _interleave_sin_cos(x_embed[:, None] / dim_t)  # (W, F/2)
        pos = torch.cat((pos_y[:, None, :].expand(h, w, -1), pos_x[None, :, :].expand(h, w, -1)), dim=-1)  # (H, W, F)
        return pos.permute(2, 0, 1).unsqueeze(0).expand(b, -1, -1, -1)


def get_1d_sine_pe(pos: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1-D encoding (N,) -> (N, dim) as [sin block (dim/2) | cos block (dim/2)] (not interleaved)."""
    half = dim // 2
    dim_t = _frequencies(half, temperature, pos.device)
    angles = pos.float().unsqueeze(-1) / dim_t
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
