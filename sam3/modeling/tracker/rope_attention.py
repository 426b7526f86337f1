"""Single-head attention with 2-D axial rotary position encoding, as used by the memory attention.

The rotation acts on adjacent channel pairs seen as complex numbers: the first half of the pairs
turns with the token's column (x = t mod W), the second half with its row (y = t div W), with
``dim / 4`` frequencies ``theta^(-4j/dim)`` per axis and integer, unscaled positions.

Keys may hold several memory frames of the same grid followed by object-pointer tokens: the
table applies to each frame's grid in turn, and the trailing pointer tokens are left unrotated.
The tables are not parameters and not in the checkpoint; they are built on the input's device
at call time (cheap next to the attention itself).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def axial_rope_table(dim: int, height: int, width: int, theta: float, device: torch.device) -> torch.Tensor:
    """The rotations as unit complex numbers e^(i angle): (height * width, dim // 2) complex64, row-major."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4, device=device)[: dim // 4].float() / dim))
    t = torch.arange(height * width, dtype=torch.float32, device=device)
    t_x = t % width
    t_y = torch.div(t, width, rounding_mode="floor")
    angles = torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate (..., R * N, D) by the (N, D/2) complex table, tiled R times: each pair (x0, x1) is multiplied as
    x0 + i x1 (as released: one complex product, no tiled copy of the table)."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-2], -1, table.shape[0], x.shape[-1] // 2, 2))
    return torch.view_as_real(pairs * table).reshape(x.shape).type_as(x)


class RoPEAttention(nn.Module):
    """q (B or 1, Nq, C) over a grid of Nq = H*W tokens; k, v (B, Nk, kv_in_dim) -> (B, Nq, C).

    ``num_k_exclude_rope`` trailing keys (object pointers) are not rotated; the other keys must be
    a whole number of grids (one per memory frame), each rotated like the queries.
    """

    def __init__(self, embed_dim: int, num_heads: int = 1, kv_in_dim: int | None = None, rope_theta: float = 10000.0):
        super().__init__()
        kv_in_dim = embed_dim if kv_in_dim is None else kv_in_dim
        if embed_dim % num_heads:
            raise ValueError("num_heads must divide embed_dim")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.rope_theta = rope_theta
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(kv_in_dim, embed_dim)
        self.v_proj = nn.Linear(kv_in_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def rope_table(self, feat_hw: tuple[int, int], device: torch.device) -> torch.Tensor:
        """The complex rotation table for this layer's head width over an H x W grid."""
        return axial_rope_table(self.embed_dim // self.num_heads, feat_hw[0], feat_hw[1], self.rope_theta, device)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        feat_hw: tuple[int, int],
        num_k_exclude_rope: int = 0,
        rope: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``rope`` is an optional precomputed ``rope_table(feat_hw, device)`` shared across layers."""
        qh = self._heads(self.q_proj(q))
        kh = self._heads(self.k_proj(k))
        vh = self._heads(self.v_proj(v))
        n_q = qh.shape[-2]
        if n_q != feat_hw[0] * feat_hw[1]:
            raise ValueError(f"{n_q} queries do not form a {feat_hw[0]}x{feat_hw[1]} grid")
        table = rope if rope is not None else self.rope_table(feat_hw, qh.device)
        qh = apply_rope(qh, table)

        n_rope = kh.shape[-2] - num_k_exclude_rope
        if n_rope > 0:
            if n_rope % n_q:
                raise ValueError(f"{n_rope} rotated keys are not a whole number of {n_q}-token grids")
            k_rot = apply_rope(kh[:, :, :n_rope], table)
            kh = torch.cat([k_rot, kh[:, :, n_rope:]], dim=2) if num_k_exclude_rope else k_rot

        if qh.shape[0] != kh.shape[0]:  # queries shared by every object (a batch of one): one copy per object
            qh = qh.expand(kh.shape[0], -1, -1, -1)
        out = F.scaled_dot_product_attention(qh, kh, vh)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))
