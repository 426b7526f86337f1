"""The whole SAM 3 model: the detector (text / box prompts) and the tracker (clicks, video memory).

Its ``state_dict`` is exactly the layout of Meta's ``sam3.pt``: ``detector.*`` and ``tracker.*``
(1465 tensors). Without instance interactivity there is no tracker and no tracker neck
(``detector.backbone.vision_backbone.sam2_convs``): 1134 tensors.

The parts are composed by the builders (``sam3.build.compose_sam3_model``) and passed in, so this module
imports no builder; loading weights, picking a device and the tokenizer files are the builders' business too.
"""

from __future__ import annotations

import torch
from torch import nn

from sam3.device import upload
from sam3.config import Sam3Config
from sam3.modeling.detector.detector import Sam3Detector
from sam3.modeling.outputs import BackboneFeatures, GeometricPrompt, GroundingOutput, TextFeatures
from sam3.modeling.tracker.tracker import Sam3Tracker


class Sam3Model(nn.Module):
    """``detector`` (Sam3Detector) and ``tracker`` (Sam3Tracker, or None without click / video support).

    ``tokenizer`` is a plain attribute (not a module): strings -> (B, context_length) token ids.
    Without one passed in, the packaged CLIP vocabulary is read on first use.
    """

    version = "sam3"  # the registry's name of this model (sam3.registry)

    def __init__(self, config: Sam3Config, detector: Sam3Detector, tracker: Sam3Tracker | None = None, tokenizer=None):
        super().__init__()
        self.config = config
        self.detector = detector
        self.tracker = tracker
        self._tokenizer = tokenizer

    # ------------------------------------------------------------------ conveniences
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from sam3.modeling.text.tokenizer import Tokenizer

            self._tokenizer = Tokenizer(context_length=self.config.text.context_length)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        self._tokenizer = value

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def has_tracker(self) -> bool:
        return self.tracker is not None

    def encode_image(self, images: torch.Tensor) -> BackboneFeatures:
        """images (B, 3, S, S) normalised to [-1, 1] -> the FPN levels of both necks and their encodings."""
        return self.detector.backbone.forward_image(images)

    def encode_trunk(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) normalised -> the ViT trunk map (B, C_trunk, g, g), before either neck.

        With :meth:`detector_levels` and :meth:`tracker_levels` it is :meth:`encode_image` in parts, for
        callers that need one neck only (the same operations, the same results)."""
        return self.detector.backbone.vision_backbone.trunk(images)

    def detector_levels(self, trunk: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """trunk map (B, C_trunk, g, g) -> the detector neck's levels and sine encodings (``BackboneFeatures.fpn``
        / ``.pos``)."""
        return self.detector.backbone.vision_backbone.detector_levels(trunk)

    def tracker_levels(self, trunk: torch.Tensor) -> list[torch.Tensor]:
        """trunk map (B, C_trunk, g, g) -> the tracker neck's levels (``BackboneFeatures.sam2_fpn``)."""
        return self.detector.backbone.vision_backbone.tracker_levels(trunk)

    def level_encodings(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """The sine position encodings of either neck's levels (``BackboneFeatures.pos`` / ``.sam2_pos``)."""
        return self.detector.backbone.vision_backbone.encodings(levels)

    def encode_text(self, texts: list[str]) -> TextFeatures:
        """B strings -> features (B, 32, C) and padding mask (B, 32), on the model's device."""
        ids = upload(self.tokenizer(list(texts)), self.device)
        return self.detector.backbone.forward_text(ids)

    def forward_grounding(
        self, features: BackboneFeatures, text: TextFeatures, prompt: GeometricPrompt | None = None
    ) -> GroundingOutput:
        """Detector outputs for every query (no thresholding); ``prompt`` None means text only."""
        if prompt is None:
            prompt = GeometricPrompt.empty(features.batch_size, features.fpn[-1].device)
        return self.detector.forward_grounding(features, text, prompt)
