"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Each block runs (1) token self-attention, (2) tokens -> image cross-attention, (3) a token MLP and
(4) image -> tokens cross-attention, each followed by a post-norm LayerNorm. Positional encodings
are added to queries and keys before every attention, never to values. A final tokens -> image
attention and LayerNorm close the stack. Everything is batch-first.

For clicks without a mask prompt the image side of the first block depends on the image only (the image
tokens are ``image_embed + no_mask_embed`` for every click), so :meth:`TwoWayTransformer.precompute_image`
computes it once per image (:class:`ImageTokens`) and ``forward(..., image_tokens=...)`` reuses it:
three of the eight large projections of the image tokens disappear from every click.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class DownsampledAttention(nn.Module):
    """Multi-head attention whose q/k/v live in ``embedding_dim // downsample_rate`` channels.

    Separate ``q_proj``/``k_proj``/``v_proj``/``out_proj`` linears (checkpoint names).
    q (B, L, C), k and v (B, S, C) -> (B, L, C).
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1):
        super().__init__()
        internal = embedding_dim // downsample_rate
        if internal % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, internal)
        self.k_proj = nn.Linear(embedding_dim, internal)
        self.v_proj = nn.Linear(embedding_dim, internal)
        self.out_proj = nn.Linear(internal, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(self.q_proj(q), self.k_proj(k), self.v_proj(v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention over already projected q (B, L, C'), k and v (B, S, C') -> out_proj -> (B, L, C)."""
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


@dataclass(frozen=True)
class ImageTokens:
    """The image side of the two-way transformer for one image and no mask prompt, made once per image.

    keys:   (1, HW, C) image tokens (image embedding + no-mask embedding), contiguous
    key_pe: (1, HW, C) the dense positional encoding of the grid, contiguous
    t2i_k, t2i_v: (1, HW, C') the first block's tokens -> image key and value projections
    i2t_q:  (1, HW, C') the first block's image -> tokens query projection
    """

    keys: torch.Tensor
    key_pe: torch.Tensor
    t2i_k: torch.Tensor
    t2i_v: torch.Tensor
    i2t_q: torch.Tensor

    def expand(self, b: int) -> "ImageTokens":
        """The same tokens for a batch of ``b`` prompts (views, no copies)."""
        if b == 1:
            return self
        grow = lambda t: t.expand(b, -1, -1)  # noqa: E731
        return ImageTokens(*(grow(t) for t in (self.keys, self.key_pe, self.t2i_k, self.t2i_v, self.i2t_q)))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.key_pe, self.t2i_k, self.t2i_v, self.i2t_q))


class TokenMLP(nn.Module):
    """lin1 -> ReLU -> lin2 on the prompt tokens."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayBlock(nn.Module):
    """One two-way block; see the module docstring for the order of its four steps."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int, first: bool):
        super().__init__()
        self.self_attn = DownsampledAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = DownsampledAttention(dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TokenMLP(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = DownsampledAttention(dim, num_heads, downsample_rate)
        # The first block's self-attention sees the raw tokens (which already *are* the prompt
        # encodings) and replaces them instead of adding a residual.
        self.first = first

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor,
        image_tokens: ImageTokens | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """queries (B, T, C) tokens, keys (B, HW, C) image -> updated (queries, keys).

        ``image_tokens`` (the first block only): the image-only projections of these ``keys``, reused.
        """
        if self.first:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        q = queries + query_pe
        if image_tokens is None:
            queries = self.norm2(queries + t2i(q, keys + key_pe, keys))
        else:
            queries = self.norm2(queries + t2i.attend(t2i.q_proj(q), image_tokens.t2i_k, image_tokens.t2i_v))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        if image_tokens is None:
            keys = self.norm4(keys + i2t(keys + key_pe, q, queries))
        else:
            keys = self.norm4(keys + i2t.attend(image_tokens.i2t_q, i2t.k_proj(q), i2t.v_proj(queries)))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a final tokens -> image attention.

    Cross-attentions use ``embedding_dim // attention_downsample_rate`` internal channels.
    """

    def __init__(
        self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int, attention_downsample_rate: int = 2
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate, first=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = DownsampledAttention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def precompute_image(self, image: torch.Tensor, image_pe: torch.Tensor) -> ImageTokens:
        """image (1, C, h, w) (embedding + no-mask embedding), image_pe (1, C, h, w) -> :class:`ImageTokens`."""
        if image.shape[0] != 1:
            raise ValueError(f"precompute_image takes one image, got a batch of {image.shape[0]}")
        keys = image.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        first = self.layers[0]
        k = keys + key_pe
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        return ImageTokens(keys, key_pe, t2i.k_proj(k), t2i.v_proj(keys), i2t.q_proj(k))

    def forward(
        self, image: torch.Tensor | None, image_pe: torch.Tensor | None, tokens: torch.Tensor,
        image_tokens: ImageTokens | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """image (B, C, h, w), image_pe (B, C, h, w), tokens (B, T, C) -> tokens (B, T, C), image (B, h*w, C).

        With ``image_tokens`` (from :meth:`precompute_image`, for a batch of B prompts on one image)
        ``image`` and ``image_pe`` are not read and may be None.
        """
        if image_tokens is not None:
            image_tokens = image_tokens.expand(tokens.shape[0])
            keys, key_pe = image_tokens.keys, image_tokens.key_pe
        else:
            keys = image.flatten(2).transpose(1, 2)
            key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, query_pe=tokens, key_pe=key_pe,
                                  image_tokens=image_tokens if i == 0 else None)  # fmt: skip
        q, k = queries + tokens, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
