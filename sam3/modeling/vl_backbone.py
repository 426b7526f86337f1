"""The detector's backbone: a vision backbone (ViT + dual FPN) and a language backbone side by side,
with no fusion between them (fusion happens later, in the detector's encoder)."""

from __future__ import annotations

import torch
from torch import nn

from sam3.modeling.outputs import BackboneFeatures, TextFeatures
from sam3.modeling.text.text_encoder import TextEncoder
from sam3.modeling.vision.neck import DualFpnNeck


class VisionLanguageBackbone(nn.Module):
    """``vision_backbone`` (DualFpnNeck) and ``language_backbone`` (TextEncoder, or None for a model that
    never reads text)."""

    def __init__(self, vision_backbone: DualFpnNeck, language_backbone: TextEncoder | None):
        super().__init__()
        self.vision_backbone = vision_backbone
        self.language_backbone = language_backbone

    def forward_image(self, images: torch.Tensor) -> BackboneFeatures:
        """images (B, 3, S, S), normalised to [-1, 1] -> FPN levels and their position encodings."""
        return self.vision_backbone(images)

    def forward_text(self, token_ids: torch.Tensor) -> TextFeatures:
        """token_ids (B, 32) long -> features (B, 32, d_model) and padding mask (B, 32)."""
        if self.language_backbone is None:
            raise RuntimeError("this model was built without a text encoder")
        return self.language_backbone(token_ids)
