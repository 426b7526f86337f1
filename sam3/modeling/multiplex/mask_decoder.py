"""Multiplex mask decoder: the masks of a whole bucket of objects from one two-way transformer pass.

A bucket of M objects has M object-score tokens, M IoU tokens and 3 mask tokens per object (the three
candidate masks; SAM 3.1's propagation decoder has no single-mask token). All 5M tokens attend to the
image together; each mask token then goes through the hypernetwork MLP of its candidate index (shared
by the M objects) to a 1x1 filter over the upsampled image map. A per-object embedding (whether the
slot holds an object) may be added to that object's mask tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sam3.modeling.interactive.mask_decoder import output_upscaling, upscale
from sam3.modeling.interactive.two_way_transformer import TwoWayTransformer
from sam3.modeling.layers.mlp import MLP


@dataclass
class MultiplexDecoderOutput:
    """Per bucket b and slot m: masks (B, M, K, 4g, 4g) logits, iou (B, M, K) (no sigmoid),
    sam_tokens (B, M, K, C) (the tokens the pointers are made from), object_score_logits (B, M, 1);
    K = 3 candidate masks."""

    masks: torch.Tensor
    iou: torch.Tensor
    sam_tokens: torch.Tensor
    object_score_logits: torch.Tensor


class MultiplexMaskDecoder(nn.Module):
    """(image (B, C, g, g), image_pe (1, C, g, g), skips, per-object embeddings (B, M, C)) -> :class:`MultiplexDecoderOutput`."""

    def __init__(
        self,
        transformer_dim: int,
        multiplex_count: int,
        num_multimask_outputs: int = 3,
        depth: int = 2,
        num_heads: int = 8,
        mlp_dim: int = 2048,
    ):
        super().__init__()
        c = transformer_dim
        self.multiplex_count = multiplex_count
        self.num_masks_per_object = num_multimask_outputs
        self.transformer = TwoWayTransformer(depth, c, num_heads, mlp_dim, attention_downsample_rate=2)
        self.iou_token = nn.Embedding(multiplex_count, c)
        self.obj_score_token = nn.Embedding(multiplex_count, c)
        self.mask_tokens = nn.Embedding(multiplex_count * num_multimask_outputs, c)
        self.output_upscaling = output_upscaling(c)
        self.conv_s0 = nn.Conv2d(c, c // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(c, c // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(c, c, c // 8, 3) for _ in range(num_multimask_outputs))
        self.iou_prediction_head = MLP(c, c, num_multimask_outputs, 3)
        self.pred_obj_score_head = MLP(c, c, 1, 3)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        high_res_features: list[torch.Tensor],
        extra_per_object_embeddings: torch.Tensor | None = None,
    ) -> MultiplexDecoderOutput:
        """image_embeddings (B, C, g, g) one row per bucket; image_pe (1, C, g, g); high_res_features
        [(B, C/8, 4g, 4g), (B, C/4, 2g, 2g)] after ``conv_s0`` / ``conv_s1``; extra_per_object_embeddings
        (B, M, C) or None."""
        b, c, h, w = image_embeddings.shape
        m, k = self.multiplex_count, self.num_masks_per_object
        head = torch.cat([self.obj_score_token.weight, self.iou_token.weight]).unsqueeze(0).expand(b, -1, -1)
        mask_tokens = self.mask_tokens.weight.view(1, m, k, c).expand(b, -1, -1, -1)
        if extra_per_object_embeddings is not None:
            mask_tokens = mask_tokens + extra_per_object_embeddings.unsqueeze(2)
        tokens = torch.cat([head, mask_tokens.flatten(1, 2)], dim=1)
        pos = torch.repeat_interleave(image_pe, b, dim=0)
        hs, src = self.transformer(image_embeddings, pos, tokens)
        obj_out, iou_out, mask_out = hs[:, :m], hs[:, m : 2 * m], hs[:, 2 * m :].reshape(b, m, k, c)

        upscaled = upscale(self.output_upscaling, src.transpose(1, 2).reshape(b, c, h, w), high_res_features)
        hyper = torch.stack([mlp(mask_out[:, :, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=2)
        _, cu, hu, wu = upscaled.shape
        masks = torch.bmm(hyper.flatten(1, 2), upscaled.view(b, cu, hu * wu)).view(b, m, k, hu, wu)
        return MultiplexDecoderOutput(
            masks=masks,
            iou=self.iou_prediction_head(iou_out).view(b, m, k),
            sam_tokens=mask_out,
            object_score_logits=self.pred_obj_score_head(obj_out),
        )
