"""Decoupled memory attention of SAM 3.1: condition a bucket's features on the bucket's memory.

SAM 3's memory attention reads one kind of token; here queries and keys each add two projections: one of
the object-side tokens (the bucket's current features, the bucket's memories) and one of the image-side
tokens (the current frame's image features, the memory frames' image features, shared by every bucket).
Values are object-side only. Multi-head (8 heads) RoPE over the g x g grid, pre-norm, GELU FFN, a final
LayerNorm. The checkpoint holds it at ``tracker.model.transformer.encoder``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam3.config_multiplex import Sam31Config
from sam3.modeling.tracker.rope_attention import apply_rope, axial_rope_table

Rope = torch.Tensor  # (N, C / heads / 2) complex rotations (axial_rope_table)


def rope_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, rope: Rope, num_k_exclude_rope: int = 0
) -> torch.Tensor:
    """q (B, N, C) over a grid of N tokens; k, v (B or 1, Nk, C) -> (B, N, C), heads rotated by ``rope``
    ((N, C / heads / 2) complex rotations). The keys are whole grids (each rotated by the table) then ``num_k_exclude_rope``
    unrotated tokens (object pointers)."""
    b, n, c = q.shape
    d = c // num_heads
    qh = q.reshape(b, n, num_heads, d).transpose(1, 2)
    kh = k.reshape(k.shape[0], k.shape[1], num_heads, d).transpose(1, 2)
    vh = v.reshape(v.shape[0], v.shape[1], num_heads, d).transpose(1, 2)
    qh = apply_rope(qh, rope)
    n_rope = kh.shape[-2] - num_k_exclude_rope
    if n_rope % n:
        raise ValueError(f"{n_rope} rotated keys are not a whole number of {n}-token grids")
    k_rot = apply_rope(kh[:, :, :n_rope], rope)
    kh = torch.cat([k_rot, kh[:, :, n_rope:]], dim=2) if num_k_exclude_rope else k_rot
    if kh.shape[0] != b:
        kh, vh = kh.expand(b, -1, -1, -1), vh.expand(b, -1, -1, -1)
    out = F.scaled_dot_product_attention(qh, kh, vh)
    return out.transpose(1, 2).reshape(b, n, c)


class DecoupledMemoryAttentionLayer(nn.Module):
    """x += SA(LN1 x); x += CA(image + LN2 x -> memory image + memory); x += FFN(LN3 x). Names are the checkpoint's."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int):
        super().__init__()
        self.num_heads = num_heads
        for name in ("self_attn", "cross_attn"):
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                self.add_module(f"{name}_{proj}", nn.Linear(d_model, d_model))
        self.image_cross_attn_q_proj = nn.Linear(d_model, d_model)
        self.image_cross_attn_k_proj = nn.Linear(d_model, d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        image: torch.Tensor,
        x: torch.Tensor,
        memory_image: torch.Tensor,
        memory: torch.Tensor,
        memory_image_pos: torch.Tensor,
        rope: Rope,
        num_obj_ptr_tokens: int,
    ) -> torch.Tensor:
        h = self.norm1(x)
        sa = rope_attention(
            self.self_attn_q_proj(h), self.self_attn_k_proj(h), self.self_attn_v_proj(h), self.num_heads, rope
        )
        x = x + self.self_attn_out_proj(sa)
        h = self.norm2(x)
        q = self.image_cross_attn_q_proj(image) + self.cross_attn_q_proj(h)
        k = self.image_cross_attn_k_proj(memory_image) + self.cross_attn_k_proj(memory) + memory_image_pos
        ca = rope_attention(q, k, self.cross_attn_v_proj(memory), self.num_heads, rope, num_obj_ptr_tokens)
        x = x + self.cross_attn_out_proj(ca)
        return x + self.linear2(F.gelu(self.linear1(self.norm3(x))))


class DecoupledMemoryAttention(nn.Module):
    """Condition B buckets on their memories.

    image (1, HW, C) and image_pos: the current frame (image side); src (B, HW, C) and src_pos: the buckets'
    current features; memory_image (1, M_img, C) and memory_image_pos: the memory frames' image features;
    memory (B, M, C) and memory_pos: the buckets' memories, M = M_img + ``num_obj_ptr_tokens`` (pointer tokens
    last; the image side is zero there and takes the pointers' position encoding). Returns (B, HW, C).
    """

    def __init__(self, config: Sam31Config):
        super().__init__()
        t = config.tracker
        self.num_heads = t.memory_attention_heads
        self.rope_theta = t.rope_theta
        self.layers = nn.ModuleList(
            DecoupledMemoryAttentionLayer(config.d_model, t.memory_attention_heads, t.memory_attention_ffn)
            for _ in range(t.memory_attention_layers)
        )
        self.norm = nn.LayerNorm(config.d_model)

    def forward(
        self,
        image: torch.Tensor,
        src: torch.Tensor,
        src_pos: torch.Tensor,
        memory_image: torch.Tensor,
        memory_image_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        feat_hw: tuple[int, int],
        num_obj_ptr_tokens: int = 0,
    ) -> torch.Tensor:
        x = src + 0.1 * src_pos
        if num_obj_ptr_tokens:
            pad = memory_image.new_zeros(memory_image.shape[0], num_obj_ptr_tokens, memory_image.shape[-1])
            memory_image = torch.cat([memory_image, pad], dim=1)
            memory_image_pos = torch.cat([memory_image_pos, memory_pos[0:1, -num_obj_ptr_tokens:]], dim=1)
        d = src.shape[-1] // self.num_heads
        rope = axial_rope_table(d, feat_hw[0], feat_hw[1], self.rope_theta, src.device)
        for layer in self.layers:
            x = layer(image, x, memory_image, memory, memory_image_pos, rope, num_obj_ptr_tokens)
        return self.norm(x)
