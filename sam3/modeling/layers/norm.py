"""Channel LayerNorm for (B, C, H, W) maps (and channels-last ones)."""

from __future__ import annotations

import torch
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map (ConvNeXt style, eps 1e-6)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight[:, None, None] * self._normalise(x, 1) + self.bias[:, None, None]

    def forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """The same normalisation for a channels-last map (..., C)."""
        return self.weight * self._normalise(x, -1) + self.bias

    def _normalise(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        mean = x.mean(dim, keepdim=True)
        var = (x - mean).pow(2).mean(dim, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps)
