"""Memory attention: condition the current frame's features on the memory bank.

A stack of pre-norm layers over the g x g level-2 tokens of the current frame:
RoPE self-attention, RoPE cross-attention into the memory (spatial memories of past frames with
``mem_dim`` channels, followed by object-pointer tokens), and a ReLU FFN; a final LayerNorm.
The checkpoint holds it at ``tracker.transformer.encoder``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam3.config import Sam3Config
from sam3.modeling.tracker.rope_attention import RoPEAttention


class MemoryAttentionLayer(nn.Module):
    """One pre-norm layer: x += SA(LN1 x); x += CA(LN2 x, mem + mem_pos, mem); x += FFN(LN3 x)."""

    def __init__(self, d_model: int, mem_dim: int, dim_feedforward: int, rope_theta: float):
        super().__init__()
        self.self_attn = RoPEAttention(d_model, num_heads=1, rope_theta=rope_theta)
        self.cross_attn_image = RoPEAttention(d_model, num_heads=1, kv_in_dim=mem_dim, rope_theta=rope_theta)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        feat_hw: tuple[int, int],
        num_obj_ptr_tokens: int,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        # Neither attention adds the current frame's sine PE: position enters through RoPE (and
        # once, scaled by 0.1, at the stack's input). Memory keys do carry their PE.
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, feat_hw, rope=rope)
        h = self.norm2(x)
        x = x + self.cross_attn_image(
            h, memory + memory_pos, memory, feat_hw, num_k_exclude_rope=num_obj_ptr_tokens, rope=rope
        )
        h = self.norm3(x)
        return x + self.linear2(F.relu(self.linear1(h)))


class MemoryAttention(nn.Module):
    """(src (B, HW, C), src_pos (B, HW, C), memory (B, M, mem_dim), memory_pos (B, M, mem_dim)) -> (B, HW, C).
    ``src`` and ``src_pos`` may be one frame expanded over the B objects (batch stride 0).

    ``memory`` is n spatial grids of HW tokens each, then ``num_obj_ptr_tokens`` pointer tokens.
    """

    def __init__(self, config: Sam3Config):
        super().__init__()
        t = config.tracker
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(config.d_model, t.mem_dim, t.memory_attention_ffn, t.rope_theta)
            for _ in range(t.memory_attention_layers)
        )
        self.norm = nn.LayerNorm(config.d_model)

    def forward(
        self,
        src: torch.Tensor,
        src_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        feat_hw: tuple[int, int],
        num_obj_ptr_tokens: int = 0,
    ) -> torch.Tensor:
        if src.shape[0] > 1 and src.stride(0) == 0 and src_pos.stride(0) == 0:
            # One frame's features broadcast over B objects: until the first cross-attention reads each
            # object's memory the rows are equal, so the first self-attention runs once (on row 0) and the
            # first cross-attention's queries broadcast over the objects.
            src, src_pos = src[:1], src_pos[:1]
        x = src + 0.1 * src_pos
        # Every layer rotates over the same grid: build the table once.
        rope = self.layers[0].self_attn.rope_table(feat_hw, src.device) if len(self.layers) else None
        for layer in self.layers:
            x = layer(x, memory, memory_pos, feat_hw, num_obj_ptr_tokens, rope)
        return self.norm(x)
