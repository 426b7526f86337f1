"""The SAM 3 detector: open-vocabulary DETR on one image and one prompt.

Dataflow of ``forward_grounding`` (shapes for the released model, g = 72):

    stride-14 map (B, C, g, g) --flatten--> src (B, g*g, C), pos (B, g*g, C)
    geometry prompt + src ---------------> geometry tokens (B, Ng, C)          [geometry_encoder]
    prompt = [text tokens (32) | geometry tokens]                          (B, L, C)
    src + prompt ------------------------> memory (B, g*g, C)               [transformer.encoder]
    memory + prompt ---------------------> per-layer queries, boxes, presence [transformer.decoder]
    queries + prompt --------------------> class logits (every layer)       [dot_prod_scoring]
    last queries + memory + fpn ---------> mask logits (B, Q, 4g, 4g)        [segmentation_head]

The backbone (vision + text) is held here so that the checkpoint names match (``detector.backbone.*``);
callers run it separately and pass its outputs in, which lets one image be queried with many prompts.
"""

from __future__ import annotations

import torch
from torch import nn

from sam3.modeling.detector.fusion_encoder import FusionEncoder
from sam3.modeling.detector.geometry_encoder import GeometryEncoder
from sam3.modeling.detector.scoring import DotProductScoring
from sam3.modeling.outputs import BackboneFeatures, GeometricPrompt, GroundingOutput, TextFeatures
from sam3.ops.boxes import inverse_sigmoid

# The video detector folds the presence score into the class logit and clamps the result here.
JOINT_LOGIT_CLAMP = 10.0


class DetectorTransformer(nn.Module):
    """Container for the fusion encoder and the DETR decoder (checkpoint prefix ``transformer.``)."""

    def __init__(self, encoder: FusionEncoder, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder


class Sam3Detector(nn.Module):
    """Composes the detector's already-built parts; see the module docstring for the dataflow."""

    def __init__(
        self,
        backbone: nn.Module,
        geometry_encoder: GeometryEncoder,
        transformer: DetectorTransformer,
        segmentation_head: nn.Module | None,
        dot_prod_scoring: DotProductScoring,
    ):
        super().__init__()
        self.backbone = backbone
        self.geometry_encoder = geometry_encoder
        self.transformer = transformer
        self.segmentation_head = segmentation_head
        self.dot_prod_scoring = dot_prod_scoring

    def encode_prompt(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        feat_hw: tuple[int, int],
        text: TextFeatures,
        prompt: GeometricPrompt,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text tokens followed by geometry tokens: (B, Lt + Ng, C) and the padding mask (B, Lt + Ng)."""
        geo, geo_mask = self.geometry_encoder(prompt, src, pos, feat_hw)
        bsz = src.shape[0]
        txt, txt_mask = text.features, text.mask
        if txt.shape[0] != bsz:  # one text prompt shared by a batch of images
            txt, txt_mask = txt.expand(bsz, -1, -1), txt_mask.expand(bsz, -1)
        tokens = torch.cat([txt.to(geo.dtype), geo], dim=1)
        mask = torch.cat([txt_mask.bool(), geo_mask], dim=1)
        return tokens, mask

    def forward_grounding(
        self,
        features: BackboneFeatures,
        text: TextFeatures,
        prompt: GeometricPrompt,
        joint_scores: bool = False,
    ) -> GroundingOutput:
        """Detect and segment what ``text`` and ``prompt`` describe in each image of ``features``.

        ``joint_scores`` reproduces the video detector: the class logit becomes
        clamp(logit(sigmoid(class) * sigmoid(presence)), +-10) on every layer.
        """
        level = features.fpn[-1]  # the stride-14 map drives everything but the mask upsampling
        bsz, c, h, w = level.shape
        src = level.flatten(2).transpose(1, 2)
        pos = features.pos[-1].flatten(2).transpose(1, 2)

        tokens, mask = self.encode_prompt(src, pos, (h, w), text, prompt)
        memory = self.transformer.encoder(src, pos, tokens, mask)
        dec = self.transformer.decoder(memory, pos, tokens, mask, (h, w))

        # The decoder's own box head re-applied to every layer, relative to that layer's reference boxes.
        offsets = self.transformer.decoder.bbox_embed(dec.hs)
        all_boxes = torch.sigmoid(offsets + inverse_sigmoid(dec.reference_boxes))  # (D, B, Q, 4)

        logits = self.dot_prod_scoring(dec.hs, tokens, mask)  # (D, B, Q, 1)
        if joint_scores:
            presence = torch.sigmoid(dec.presence_logits)[:, :, None, :]  # (D, B, 1, 1)
            logits = inverse_sigmoid(torch.sigmoid(logits) * presence)
            logits = logits.clamp(min=-JOINT_LOGIT_CLAMP, max=JOINT_LOGIT_CLAMP)
        all_logits = logits.squeeze(-1)  # (D, B, Q)

        queries = dec.hs[-1]
        if self.segmentation_head is not None:
            pred_masks = self.segmentation_head(list(features.fpn[:-1]), memory, (h, w), tokens, mask, queries)
        else:
            pred_masks = queries.new_zeros(bsz, queries.shape[1], 0, 0)

        return GroundingOutput(
            pred_logits=all_logits[-1],
            presence_logit=dec.presence_logits[-1],
            pred_boxes=all_boxes[-1],
            pred_masks=pred_masks,
            prompt=tokens,
            prompt_mask=mask,
            memory=memory,
            decoder=dec,
            all_pred_logits=all_logits,
            all_pred_boxes=all_boxes,
        )
