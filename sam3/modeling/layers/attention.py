"""Multi-head attention with packed q/k/v projections, on scaled_dot_product_attention.

The parameter layout (``in_proj_weight`` (3C, C), ``in_proj_bias`` (3C), ``out_proj``) is the one
``torch.nn.MultiheadAttention`` uses and the checkpoint stores. Everything is batch-first here;
callers holding sequence-first tensors transpose at their boundary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiheadAttention(nn.Module):
    """q (B, L, C), k and v (B, S, C) -> (B, L, C).

    ``key_padding_mask`` (B, S) bool, True = ignore that key. ``attn_bias`` is an additive float bias
    broadcastable to (B, heads, L, S).
    """

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError("embed_dim must be divisible by num_heads")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.in_proj_weight.is_meta:
            return
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        attn_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, lq, c = q.shape
        s = k.shape[1]
        h = self.num_heads
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        qh = F.linear(q, w_q, b_q).view(b, lq, h, c // h).transpose(1, 2)
        kh = F.linear(k, w_k, b_k).view(b, s, h, c // h).transpose(1, 2)
        vh = F.linear(v, w_v, b_v).view(b, s, h, c // h).transpose(1, 2)
        mask = attn_bias
        if key_padding_mask is not None:
            pad = torch.zeros(b, 1, 1, s, dtype=qh.dtype, device=qh.device)
            pad = pad.masked_fill(key_padding_mask.view(b, 1, 1, s), float("-inf"))
            mask = pad if mask is None else mask + pad
        if mask is not None and mask.dtype != qh.dtype:
            mask = mask.to(qh.dtype)
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, c))
