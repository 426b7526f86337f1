"""Dual simple-FPN neck (ViTDet "SimpleFPN", twice): every pyramid level is made from the trunk's
single stride-p map by transposed convolutions (up), identity, or max-pooling (down).

``convs`` feeds the detector; ``sam2_convs`` is an independent copy with its own weights that feeds the
tracker and the click predictor (None for a model without them). The coarsest ``scalp`` levels exist
in the checkpoint but their outputs are discarded by the model, so they are not computed here.
"""

from __future__ import annotations

import torch
from torch import nn

from sam3.config import VisionConfig
from sam3.modeling.layers.position_encoding import PositionEmbeddingSine
from sam3.modeling.outputs import BackboneFeatures
from sam3.modeling.vision.vit import ViT


def fpn_level(in_dim: int, d_model: int, scale: float) -> nn.Sequential:
    """One pyramid level: (B, in_dim, g, g) -> (B, d_model, scale*g, scale*g).

    Child names (``dconv_2x2_0``, ``gelu``, ``dconv_2x2_1``, ``dconv_2x2``, ``maxpool_2x2``, ``conv_1x1``,
    ``conv_3x3``) are the checkpoint's.
    """
    level = nn.Sequential()
    if scale == 4.0:
        level.add_module("dconv_2x2_0", nn.ConvTranspose2d(in_dim, in_dim // 2, kernel_size=2, stride=2))
        level.add_module("gelu", nn.GELU())
        level.add_module("dconv_2x2_1", nn.ConvTranspose2d(in_dim // 2, in_dim // 4, kernel_size=2, stride=2))
        dim = in_dim // 4
    elif scale == 2.0:
        level.add_module("dconv_2x2", nn.ConvTranspose2d(in_dim, in_dim // 2, kernel_size=2, stride=2))
        dim = in_dim // 2
    elif scale == 1.0:
        dim = in_dim
    elif scale == 0.5:
        level.add_module("maxpool_2x2", nn.MaxPool2d(kernel_size=2, stride=2))
        dim = in_dim
    else:
        raise ValueError(f"unsupported FPN scale factor {scale}; expected one of 4, 2, 1, 0.5")
    level.add_module("conv_1x1", nn.Conv2d(dim, d_model, kernel_size=1))
    level.add_module("conv_3x3", nn.Conv2d(d_model, d_model, kernel_size=3, padding=1))
    return level


class DualFpnNeck(nn.Module):
    """trunk + two simple FPNs. images (B, 3, S, S) -> :class:`BackboneFeatures`.

    With the released sizes (S = 1008, g = 72) the kept levels are 288, 144 and 72 pixels wide, each with
    ``d_model`` channels, and each comes with its 2-D sine position encoding (same shape).
    """

    def __init__(self, trunk: ViT, cfg: VisionConfig, d_model: int, with_sam2_neck: bool = True):
        super().__init__()
        if not 0 <= cfg.scalp < len(cfg.scale_factors):
            raise ValueError("scalp must leave at least one FPN level")
        self.trunk = trunk
        self.position_encoding = PositionEmbeddingSine(d_model)
        dim = trunk.out_channels
        self.convs = nn.ModuleList(fpn_level(dim, d_model, s) for s in cfg.scale_factors)
        self.sam2_convs = (
            nn.ModuleList(fpn_level(dim, d_model, s) for s in cfg.scale_factors) if with_sam2_neck else None
        )
        self.num_levels = len(cfg.scale_factors) - cfg.scalp

    def forward(self, images: torch.Tensor) -> BackboneFeatures:
        return self.forward_trunk_features(self.trunk(images))

    def forward_trunk_features(self, x: torch.Tensor) -> BackboneFeatures:
        """The pyramids of both necks from an already computed trunk map x (B, C_trunk, g, g)."""
        fpn, pos = self.detector_levels(x)
        if self.sam2_convs is None:
            return BackboneFeatures(fpn=fpn, pos=pos)
        # Both necks produce the same shapes, so one encoding per level serves both.
        return BackboneFeatures(fpn=fpn, pos=pos, sam2_fpn=self.tracker_levels(x), sam2_pos=list(pos))

    def detector_levels(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The detector neck (``convs``) of a trunk map x (B, C_trunk, g, g) -> (levels, sine encodings),
        each [(B, C, 4g, 4g), (B, C, 2g, 2g), (B, C, g, g)]."""
        fpn = [self.convs[i](x) for i in range(self.num_levels)]
        return fpn, self.encodings(fpn)

    def encodings(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """The 2-D sine encodings of levels (either neck's: they depend on the shape only), each as its level."""
        return [self.position_encoding(level).to(level.dtype) for level in levels]

    def tracker_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tracker neck (``sam2_convs``) of a trunk map x -> its levels, shapes as :meth:`detector_levels`.
        Their sine encodings equal the detector's (they depend on the shape only); the click path reads none."""
        if self.sam2_convs is None:
            raise RuntimeError("this backbone was built without the tracker neck (sam2_convs)")
        return [self.sam2_convs[i](x) for i in range(self.num_levels)]
