"""Image-prompt fusion encoder: image tokens attend to themselves, then to the prompt tokens.

The detector runs it on the stride-14 map (g*g tokens) with the prompt (text tokens followed by
geometry tokens) as the cross-attention memory. The same pre-norm layer, with the position
encodings moved around, is what the geometry encoder stacks on its prompt tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam3.config import FusionEncoderConfig
from sam3.modeling.layers.attention import MultiheadAttention


class FusionEncoderLayer(nn.Module):
    """Pre-norm block: self-attention, cross-attention to ``memory``, ReLU feed-forward.

    x (B, L, C), memory (B, S, C) -> (B, L, C). Position encodings are optional and go where the
    caller says: ``query_pos`` (B, L, C) is added to the self-attention queries and keys (never to
    the values); ``memory_pos`` (B, S, C) is added to the cross-attention keys only.
    Masks are (B, L) / (B, S) bool with True marking padding.
    Parameter names (``self_attn``, ``cross_attn_image``, ``linear1/2``, ``norm1..3``) follow the checkpoint.
    """

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, num_heads)
        self.cross_attn_image = MultiheadAttention(d_model, num_heads)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        query_pos: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
        x_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        y = self.norm1(x)
        qk = y if query_pos is None else y + query_pos
        x = x + self.self_attn(qk, qk, y, key_padding_mask=x_mask)

        y = self.norm2(x)
        keys = memory if memory_pos is None else memory + memory_pos
        x = x + self.cross_attn_image(y, keys, memory, key_padding_mask=memory_mask)

        y = self.norm3(x)
        return x + self.linear2(F.relu(self.linear1(y)))


class FusionEncoder(nn.Module):
    """A stack of pre-norm fusion layers with no final norm (the decoder reads the raw output).

    forward(src (B, HW, C), pos (B, HW, C), prompt (B, L, C), prompt_mask (B, L) True = pad)
    -> memory (B, HW, C). The image position encoding enters the self-attention only; the prompt
    carries no position encoding.
    """

    def __init__(self, cfg: FusionEncoderConfig, d_model: int = 256):
        super().__init__()
        self.layers = nn.ModuleList(
            FusionEncoderLayer(d_model, cfg.num_heads, cfg.dim_feedforward) for _ in range(cfg.num_layers)
        )

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        x = src
        for layer in self.layers:
            x = layer(x, prompt, query_pos=pos, memory_mask=prompt_mask)
        return x
