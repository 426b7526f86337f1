"""CLIP-style causal text transformer and the linear resizer to the detector width.

token ids (B, L) -> :class:`TextFeatures` (features (B, L, d_model), mask (B, L) True = padding).
Parameter names follow the checkpoint (``detector.backbone.language_backbone.*``):
``encoder.{token_embedding, positional_embedding, transformer.resblocks.i.{ln_1, attn, ln_2, mlp.{c_fc,
c_proj}}, ln_final, text_projection}`` and ``resizer``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from sam3.config import TextConfig
from sam3.modeling.layers.attention import MultiheadAttention
from sam3.modeling.outputs import TextFeatures

PAD_ID = 0


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: x += attn(ln_1(x), causal); x += mlp(ln_2(x)). x (B, L, W) -> (B, L, W)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict([("c_fc", nn.Linear(width, hidden)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(hidden, width))])
        )

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, attn_bias=attn_bias)
        return x + self.mlp(self.ln_2(x))


class TransformerStack(nn.Module):
    """The ``transformer`` of the checkpoint: a list of ``resblocks``."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers)
        )

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_bias)
        return x


def causal_bias(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(L, L) additive mask: 0 on and below the diagonal, -inf above (a token sees only its past)."""
    return torch.full((length, length), float("-inf"), dtype=dtype, device=device).triu(1)


class TextTransformer(nn.Module):
    """token ids (B, L) -> per-token features (B, L, width) after ``ln_final``.

    No padding mask is applied: the causal mask alone keeps real tokens from seeing the trailing pads.
    ``text_projection`` (the CLIP pooled-embedding projection) is kept for strict loading but unused.
    """

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = TransformerStack(cfg)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, cfg.output_dim))
        self._init_weights(cfg)

    def _init_weights(self, cfg: TextConfig) -> None:
        if self.positional_embedding.is_meta:
            return
        # CLIP's initialisation; the released weights replace all of it.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=cfg.width**-0.5)
        attn_std = cfg.width**-0.5
        proj_std = attn_std * (2 * cfg.layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * cfg.width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        length = token_ids.shape[1]
        x = self.token_embedding(token_ids) + self.positional_embedding[:length]
        x = self.transformer(x, causal_bias(length, x.dtype, x.device))
        return self.ln_final(x)


class TextEncoder(nn.Module):
    """The language backbone: ``encoder`` (TextTransformer) then ``resizer`` (width -> d_model)."""

    def __init__(self, cfg: TextConfig, d_model: int):
        super().__init__()
        self.context_length = cfg.context_length
        self.encoder = TextTransformer(cfg)
        self.resizer = nn.Linear(cfg.width, d_model)

    def forward(self, token_ids: torch.Tensor) -> TextFeatures:
        """token_ids (B, L) long, 0 = padding -> features (B, L, d_model), mask (B, L) True = padding."""
        if token_ids.shape[1] > self.context_length:
            raise ValueError(f"at most {self.context_length} tokens, got {token_ids.shape[1]}")
        features = self.resizer(self.encoder(token_ids))
        return TextFeatures(features=features, mask=token_ids == PAD_ID)
