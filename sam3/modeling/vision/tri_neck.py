"""Three-head simple-FPN neck of SAM 3.1: one trunk, three independent pyramids.

``convs`` feeds the detector (as in SAM 3), ``interactive_convs`` the click heads (SAM 3's ``sam2_convs``
role) and ``propagation_convs`` the multiplexed tracker. Each has the levels of ``scale_factors``
(4, 2, 1 in the release: no 0.5x level, nothing scalped). Module names are the checkpoint's
(``detector.backbone.vision_backbone.{convs,interactive_convs,propagation_convs}.i``).
"""

from __future__ import annotations

import torch
from torch import nn

from sam3.config import VisionConfig
from sam3.modeling.outputs import BackboneFeatures
from sam3.modeling.vision.neck import DualFpnNeck, fpn_level
from sam3.modeling.vision.vit import ViT


class TriFpnNeck(DualFpnNeck):
    """trunk + three simple FPNs; images (B, 3, S, S) -> :class:`BackboneFeatures` whose ``sam2_fpn`` are the
    interactive levels (what the click path reads); :meth:`propagation_levels` gives the tracker's."""

    def __init__(self, trunk: ViT, cfg: VisionConfig, d_model: int):
        super().__init__(trunk, cfg, d_model, with_sam2_neck=False)
        dim = trunk.out_channels
        self.interactive_convs = nn.ModuleList(fpn_level(dim, d_model, s) for s in cfg.scale_factors)
        self.propagation_convs = nn.ModuleList(fpn_level(dim, d_model, s) for s in cfg.scale_factors)

    def forward_trunk_features(self, x: torch.Tensor) -> BackboneFeatures:
        fpn, pos = self.detector_levels(x)
        # Every head produces the same shapes, so one sine encoding per level serves all three.
        return BackboneFeatures(fpn=fpn, pos=pos, sam2_fpn=self.tracker_levels(x), sam2_pos=list(pos))

    def tracker_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The interactive head's levels of a trunk map x (B, C_trunk, g, g): [(B, C, 4g, 4g), (B, C, 2g, 2g),
        (B, C, g, g)] (the click path; named as SAM 3's tracker neck so the click predictor serves both)."""
        return [self.interactive_convs[i](x) for i in range(self.num_levels)]

    def propagation_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The propagation head's levels of a trunk map x, shapes as :meth:`tracker_levels` (the tracker)."""
        return [self.propagation_convs[i](x) for i in range(self.num_levels)]
