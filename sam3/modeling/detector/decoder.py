"""DETR-style query decoder with a presence token, iterative box refinement and box-relative position bias.

Each of the D post-norm layers runs, on the presence token followed by the Q object queries:
self-attention -> ``norm2``, cross-attention to the (pre-encoder) prompt -> ``catext_norm``,
cross-attention to the fused image memory -> ``norm1``, FFN -> ``norm3``. (The norm names follow
the checkpoint, not the execution order.)

Queries are positioned by reference boxes (normalised cxcywh, sigmoid space): a sine encoding of
the box feeds ``ref_point_head`` to give the query position, and the box itself biases the image
cross-attention per head ("boxRPB", log-spaced distances from every feature-map row and column
to the box edges). After every layer the boxes are refined in logit space by ``bbox_embed`` and
detached before the next layer, so each layer learns a residual on a fixed starting box.

The presence token takes part in self-attention (with a zero position) and in the image
cross-attention (with a zero bias row), but is not a query; its own head gives one logit per
image saying whether the prompt is present at all.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sam3.config import DecoderConfig
from sam3.modeling.layers.attention import MultiheadAttention
from sam3.modeling.layers.mlp import MLP
from sam3.modeling.layers.position_encoding import PositionEmbeddingSine
from sam3.modeling.outputs import DecoderOutput
from sam3.ops.boxes import box_cxcywh_to_xyxy, inverse_sigmoid


class DetrDecoderLayer(nn.Module):
    """One post-norm decoder layer over ``x = [presence token, queries]`` (B, 1+Q, C)."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int):
        super().__init__()
        self.cross_attn = MultiheadAttention(d_model, num_heads)
        self.norm1 = nn.LayerNorm(d_model)
        self.ca_text = MultiheadAttention(d_model, num_heads)
        self.catext_norm = nn.LayerNorm(d_model)
        self.self_attn = MultiheadAttention(d_model, num_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        # The released model runs its FFN outside mixed precision; keep that under any autocast policy.
        if torch.amp.is_autocast_available(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self.linear2(F.relu(self.linear1(x)))
        return self.linear2(F.relu(self.linear1(x)))

    def forward(
        self,
        x: torch.Tensor,
        x_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor | None,
        image_bias: torch.Tensor,
    ) -> torch.Tensor:
        """
        x, x_pos:          (B, 1+Q, C) tokens and their positions (zero for the presence token)
        memory, memory_pos: (B, HW, C) fused image features and their sine encoding
        prompt:            (B, L, C) prompt tokens; prompt_mask (B, L) True = padding
        image_bias:        (B, heads, 1+Q, HW) additive bias of the image cross-attention
        returns            (B, 1+Q, C)
        """
        q = x + x_pos
        x = self.norm2(x + self.self_attn(q, q, x))
        x = self.catext_norm(x + self.ca_text(x + x_pos, prompt, prompt, key_padding_mask=prompt_mask))
        x = self.norm1(x + self.cross_attn(x + x_pos, memory + memory_pos, memory, attn_bias=image_bias))
        return self.norm3(x + self._ffn(x))


class DetrDecoder(nn.Module):
    """Decoder of the detector. Parameter names follow ``detector.transformer.decoder.*`` of ``sam3.pt``."""

    def __init__(self, cfg: DecoderConfig, d_model: int = 256):
        super().__init__()
        self.d_model = d_model
        self.num_heads = cfg.num_heads
        self.layers = nn.ModuleList(
            DetrDecoderLayer(d_model, cfg.num_heads, cfg.dim_feedforward) for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.query_embed = nn.Embedding(cfg.num_queries, d_model)
        self.reference_points = nn.Embedding(cfg.num_queries, 4)  # logits of the initial cxcywh boxes
        self.boxRPB_embed_x = MLP(2, d_model, cfg.num_heads, 2)
        self.boxRPB_embed_y = MLP(2, d_model, cfg.num_heads, 2)
        self.presence_token = nn.Embedding(1, d_model)
        self.presence_token_head = MLP(d_model, d_model, 1, 3)
        self.presence_token_out_norm = nn.LayerNorm(d_model)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        # Parameter-free sine encoder; d_model/2 frequencies per box coordinate -> 2*d_model features.
        self.box_sine = PositionEmbeddingSine(d_model)
        self._init_weights()

    def _init_weights(self) -> None:
        last = self.bbox_embed.layers[-1]
        if last.weight.is_meta:
            return
        # Start refinement as the identity (each layer's box = its reference box) until trained.
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        nn.init.normal_(self.query_embed.weight)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def _query_sine(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, Q, 4) cxcywh -> (B, Q, 2C) as [enc(cy), enc(cx), enc(w), enc(h)], each (C/2) interleaved sin/cos."""
        b, q, _ = boxes.shape
        cx, cy, w, h = boxes.reshape(b * q, 4).unbind(-1)
        enc_x, enc_y = self.box_sine.encode_xy(cx, cy)
        enc_w, enc_h = self.box_sine.encode_xy(w, h)
        return torch.cat((enc_y, enc_x, enc_w, enc_h), dim=-1).view(b, q, -1)

    @staticmethod
    def _log_distance(d: torch.Tensor) -> torch.Tensor:
        """Signed log-scale distance: d in [-1, 1] -> sign(8d) * log2(|8d| + 1) / 3, so |d| = 1 maps to ~1.06."""
        d = d * 8
        return torch.sign(d) * torch.log2(d.abs() + 1.0) / math.log2(8)

    def _box_bias(self, boxes: torch.Tensor, feat_hw: tuple[int, int]) -> torch.Tensor:
        """Box-relative position bias of the image cross-attention.

        boxes (B, Q, 4) cxcywh -> (B, heads, Q, H*W). The cell coordinates are ``index / size``
        (the top-left corners, as in training), built here on the boxes' device.
        """
        h, w = feat_hw
        xyxy = box_cxcywh_to_xyxy(boxes)
        coords_y = torch.arange(h, dtype=torch.float32, device=boxes.device) / h
        coords_x = torch.arange(w, dtype=torch.float32, device=boxes.device) / w
        # Distances from each row (column) to the box's top and bottom (left and right) edges.
        dy = coords_y[None, None, :, None] - xyxy[:, :, None, 1::2]  # (B, Q, H, 2)
        dx = coords_x[None, None, :, None] - xyxy[:, :, None, 0::2]  # (B, Q, W, 2)
        by = self.boxRPB_embed_y(self._log_distance(dy))  # (B, Q, H, heads)
        bx = self.boxRPB_embed_x(self._log_distance(dx))  # (B, Q, W, heads)
        bias = by[:, :, :, None, :] + bx[:, :, None, :, :]  # (B, Q, H, W, heads)
        return bias.flatten(2, 3).permute(0, 3, 1, 2).contiguous()

    def forward(
        self,
        memory: torch.Tensor,
        pos: torch.Tensor,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor | None,
        feat_hw: tuple[int, int],
    ) -> DecoderOutput:
        """
        memory:      (B, H*W, C) fusion-encoder output
        pos:         (B, H*W, C) its sine position encoding
        prompt:      (B, L, C) the prompt tokens as fed to the encoder (text, then geometry)
        prompt_mask: (B, L) bool, True = padding
        feat_hw:     (H, W) of the memory grid
        """
        b = memory.shape[0]
        h, w = (int(s) for s in feat_hw)
        x = self.query_embed.weight[None].expand(b, -1, -1)
        presence = self.presence_token.weight[None].expand(b, -1, -1)  # (B, 1, C)
        ref = self.reference_points.weight.sigmoid()[None].expand(b, -1, -1)  # (B, Q, 4)
        zero_pos = torch.zeros_like(presence)

        hs, refs, presence_logits = [], [], []
        stored_ref = ref
        for layer in self.layers:
            query_pos = self.ref_point_head(self._query_sine(ref))  # (B, Q, C)
            bias = self._box_bias(ref, (h, w))  # (B, heads, Q, HW)
            bias = torch.cat((bias.new_zeros(b, self.num_heads, 1, h * w), bias), dim=2)
            tokens = layer(
                torch.cat((presence, x), dim=1),
                torch.cat((zero_pos, query_pos), dim=1),
                memory,
                pos,
                prompt,
                prompt_mask,
                bias,
            )
            presence, x = tokens[:, :1], tokens[:, 1:]

            out = self.norm(x)
            new_ref = (self.bbox_embed(out) + inverse_sigmoid(ref)).sigmoid()
            hs.append(out)
            refs.append(stored_ref)
            presence_logits.append(self.presence_token_head(self.presence_token_out_norm(presence)).squeeze(-1))
            # The reported boxes keep their gradient; the next layer starts from a detached copy.
            stored_ref, ref = new_ref, new_ref.detach()

        return DecoderOutput(
            hs=torch.stack(hs),
            reference_boxes=torch.stack(refs),
            presence_logits=torch.stack(presence_logits),
        )
