"""Frozen model configurations.

Two presets share one architecture and one code path:

* ``sam3``  -- the released model (the layout of Meta's ``sam3.pt``).
* ``tiny``  -- the same modules with small widths, depths and a 224 px input, for tests.
  The detector / tracker width ``d_model`` stays 256 in both presets: it is cheap at small
  token counts and keeps every head identical in structure to the released model.

Every size the modules need comes from here; model code never hard-codes 1008, 72 or 288.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class VisionConfig:
    """ViT trunk + dual simple-FPN neck."""

    image_size: int = 1008
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 32
    num_heads: int = 16
    mlp_ratio: float = 4.625
    window_size: int = 24
    global_blocks: tuple[int, ...] = (7, 15, 23, 31)
    pretrain_image_size: int = 336  # the absolute position table is (pretrain/patch)^2 + 1 cls
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-5
    scale_factors: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)
    scalp: int = 1  # number of coarsest FPN levels computed and then dropped

    @property
    def grid_size(self) -> int:
        """Token grid side (72 for the released model)."""
        return self.image_size // self.patch_size

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


@dataclass(frozen=True)
class TextConfig:
    """CLIP-style causal text transformer."""

    width: int = 1024
    heads: int = 16
    layers: int = 24
    context_length: int = 32
    vocab_size: int = 49408
    mlp_ratio: float = 4.0
    output_dim: int = 512  # the (unused) CLIP projection


@dataclass(frozen=True)
class GeometryConfig:
    """Box / point prompt encoder."""

    num_layers: int = 3
    num_heads: int = 8
    dim_feedforward: int = 2048
    roi_size: int = 7


@dataclass(frozen=True)
class FusionEncoderConfig:
    """Image-prompt fusion encoder (pre-norm)."""

    num_layers: int = 6
    num_heads: int = 8
    dim_feedforward: int = 2048


@dataclass(frozen=True)
class DecoderConfig:
    """DETR-style decoder with presence token and box-relative position bias."""

    num_layers: int = 6
    num_queries: int = 200
    num_heads: int = 8
    dim_feedforward: int = 2048


@dataclass(frozen=True)
class ScoringConfig:
    """Dot-product class scoring and the segmentation head."""

    prompt_mlp_hidden: int = 2048
    clamp_max: float = 12.0
    pixel_decoder_stages: int = 3


@dataclass(frozen=True)
class TrackerConfig:
    """SAM-2 style memory tracker and the SAM prompt encoder / mask decoder it shares with clicks."""

    mem_dim: int = 64
    num_maskmem: int = 7
    memory_attention_layers: int = 4
    memory_attention_ffn: int = 2048
    mask_decoder_mlp_dim: int = 2048
    mask_decoder_depth: int = 2
    mask_decoder_heads: int = 8
    num_multimask_outputs: int = 3
    mask_in_chans: int = 16
    max_obj_ptrs_in_encoder: int = 16
    max_cond_frames_in_attn: int = 4
    rope_theta: float = 10000.0
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    # Tracking-time switches of the released video model (temporal disambiguation on).
    use_memory_selection: bool = True  # pick non-conditioning memories by their eff_iou_score
    memory_selection_threshold: float = 0.01
    multimask_max_points: int = 1  # 3 candidate masks when a frame has at most this many clicks


class DerivedSizes:
    """Sizes derived from ``vision`` (a config's section), named as the spec names them; shared by the SAM 3
    and SAM 3.1 configs."""

    vision: VisionConfig

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    @property
    def feature_size(self) -> int:
        """Side of the stride-14 map (72)."""
        return self.vision.grid_size

    @property
    def low_res_mask_size(self) -> int:
        """SAM / detector mask logits side (288 = 4 x 72)."""
        return 4 * self.vision.grid_size

    @property
    def input_mask_size(self) -> int:
        """Memory-encoder mask side (1152 = 4 x 288)."""
        return 4 * self.low_res_mask_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Sam3Config(DerivedSizes):
    """The whole model. ``d_model`` is the detector and tracker width."""

    name: str = "sam3"
    d_model: int = 256
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    encoder: FusionEncoderConfig = field(default_factory=FusionEncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


def _tiny() -> Sam3Config:
    return Sam3Config(
        name="tiny",
        vision=VisionConfig(
            image_size=224,
            embed_dim=64,
            depth=4,
            num_heads=2,
            window_size=8,
            global_blocks=(1, 3),
            pretrain_image_size=112,
        ),
        text=TextConfig(width=64, heads=2, layers=2, output_dim=32),
        geometry=GeometryConfig(num_layers=2, dim_feedforward=256),
        encoder=FusionEncoderConfig(num_layers=2, dim_feedforward=256),
        decoder=DecoderConfig(num_layers=2, num_queries=32, dim_feedforward=256),
        scoring=ScoringConfig(prompt_mlp_hidden=256),
        tracker=TrackerConfig(memory_attention_layers=2, memory_attention_ffn=256),
    )


PRESETS = {"sam3": Sam3Config, "tiny": _tiny}


def get_config(preset: str = "sam3") -> Sam3Config:
    """Return the named preset; raises ``ValueError`` naming the known presets."""
    try:
        return PRESETS[preset]()
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; known presets: {sorted(PRESETS)}") from None
