"""Class logits as a scaled dot product between each query and the pooled prompt.

There is no fixed classifier: the "class" is whatever the prompt describes. The prompt tokens
(text + geometry, as fed to the fusion encoder) are refined by a residual MLP, mean-pooled over the
valid tokens, projected, and compared with every projected decoder query.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sam3.config import ScoringConfig
from sam3.modeling.layers.mlp import MLP


class DotProductScoring(nn.Module):
    """forward(hs (D, B, Q, C), prompt (B, L, C), prompt_mask (B, L) True = pad) -> logits (D, B, Q, 1).

    logits = <hs_proj(hs), prompt_proj(mean_valid(prompt_mlp(prompt)))> / sqrt(C), clamped to +-clamp_max.
    """

    def __init__(self, cfg: ScoringConfig, d_model: int = 256):
        super().__init__()
        self.prompt_mlp = MLP(d_model, cfg.prompt_mlp_hidden, d_model, num_layers=2, residual=True, out_norm=True)
        self.prompt_proj = nn.Linear(d_model, d_model)
        self.hs_proj = nn.Linear(d_model, d_model)
        self.scale = 1.0 / math.sqrt(d_model)
        self.clamp_max = cfg.clamp_max

    def pool_prompt(self, prompt: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, C), (B, L) -> (B, C): the projected mean of the MLP-refined valid tokens."""
        refined = self.prompt_mlp(prompt)
        valid = (~prompt_mask).to(refined.dtype)[..., None]  # (B, L, 1)
        # A fully padded prompt would divide by zero; the count is floored at 1 (the sum is then 0).
        count = valid.sum(dim=1).clamp(min=1.0)
        return self.prompt_proj((refined * valid).sum(dim=1) / count)

    def forward(self, hs: torch.Tensor, prompt: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.pool_prompt(prompt, prompt_mask)  # (B, C)
        # (D, B, Q, C) @ (B, C, 1) broadcasts over the layer axis.
        logits = torch.matmul(self.hs_proj(hs), pooled[:, :, None]) * self.scale
        return logits.clamp(min=-self.clamp_max, max=self.clamp_max)
