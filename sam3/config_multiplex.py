"""Frozen configuration of SAM 3.1 (Object Multiplex).

SAM 3.1 keeps SAM 3's detector (ViT trunk, text encoder, geometry encoder, fusion encoder, decoder, scoring,
segmentation head: the same sections of :class:`sam3.config.Sam3Config`, read by the same builder) and
changes two things:

* the neck has three simple-FPN heads over the one trunk, each with three levels (strides 4, 2, 1 of the
  trunk map; no 0.5x level, nothing scalped): ``convs`` (detector), ``interactive_convs`` (clicks) and
  ``propagation_convs`` (the multiplexed tracker);
* the tracker (:class:`MultiplexTrackerConfig`) tracks objects in buckets of ``multiplex_count`` that share
  one pass: one mask decoder call decodes the masks of a whole bucket, and the memory encoder takes the
  bucket's masks as channels.

Presets: ``sam3`` (the released ``sam3.1_multiplex.pt`` sizes) and ``tiny`` (the tiny detector of
``sam3.config`` and a 4-object bucket, so a handful of objects already spans several buckets).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from sam3.config import (
    DecoderConfig,
    DerivedSizes,
    FusionEncoderConfig,
    GeometryConfig,
    Sam3Config,
    ScoringConfig,
    TextConfig,
    VisionConfig,
    get_config,
)


@dataclass(frozen=True)
class MultiplexTrackerConfig:
    """The multiplexed tracker (upstream ``VideoTrackingDynamicMultiplex`` as ``build_sam3_multiplex_video_model``
    wires it) and the interactive SAM heads it carries for clicks."""

    multiplex_count: int = 16  # objects per bucket
    num_maskmem: int = 7
    mem_dim: int = 256  # the memory keeps the full width (SAM 3: 64)
    memory_attention_layers: int = 4
    memory_attention_heads: int = 8
    memory_attention_ffn: int = 2048
    rope_theta: float = 10000.0
    mask_decoder_mlp_dim: int = 2048
    mask_decoder_depth: int = 2
    mask_decoder_heads: int = 8
    num_multimask_outputs: int = 3
    mask_in_chans: int = 16
    # memory encoder: the bucket's masks as 2 * multiplex_count channels (mask, and its validity), brought
    # down by four stride-2 stages whose widths start at 4 * 4
    mask_downsampler_start_chans: int = 4
    mask_channels_per_object: int = 2
    max_obj_ptrs_in_encoder: int = 16
    max_cond_frames_in_attn: int = 4
    sigmoid_scale_for_mem_enc: float = 2.0
    sigmoid_bias_for_mem_enc: float = -1.0
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    multimask_max_points: int = 1


# The sections SAM 3.1 shares with SAM 3 (all of Sam3Config's but the tracker).
_DETECTOR_FIELDS = tuple(f.name for f in dataclasses.fields(Sam3Config) if f.name != "tracker")


@dataclass(frozen=True)
class Sam31Config(DerivedSizes):
    """SAM 3.1: SAM 3's detector sections with a three-head neck, and the multiplexed tracker."""

    name: str = "sam3"
    d_model: int = 256
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    vision: VisionConfig = field(default_factory=lambda: VisionConfig(scale_factors=(4.0, 2.0, 1.0), scalp=0))
    text: TextConfig = field(default_factory=TextConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    encoder: FusionEncoderConfig = field(default_factory=FusionEncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    tracker: MultiplexTrackerConfig = field(default_factory=MultiplexTrackerConfig)
    version: str = "sam3.1"

    def detector_config(self) -> Sam3Config:
        """The detector sections as a :class:`Sam3Config` (what :func:`sam3.build.build_detector` and the click
        heads read); its ``tracker`` section is SAM 3's, whose SAM-head sizes the interactive heads share."""
        return Sam3Config(**{name: getattr(self, name) for name in _DETECTOR_FIELDS})


def _from_sam3(preset: str, tracker: MultiplexTrackerConfig) -> Sam31Config:
    """SAM 3's preset for the detector sections, on the three-head neck, with ``tracker``."""
    base = get_config(preset)
    detector = {name: getattr(base, name) for name in _DETECTOR_FIELDS}
    detector["vision"] = dataclasses.replace(base.vision, scale_factors=(4.0, 2.0, 1.0), scalp=0)
    return Sam31Config(**detector, tracker=tracker)


def _tiny() -> Sam31Config:
    return _from_sam3(
        "tiny", MultiplexTrackerConfig(multiplex_count=4, memory_attention_layers=2, memory_attention_ffn=256)
    )


PRESETS = {"sam3": lambda: _from_sam3("sam3", MultiplexTrackerConfig()), "tiny": _tiny}


def get_multiplex_config(preset: str = "sam3") -> Sam31Config:
    """The SAM 3.1 config of a preset (the preset names are SAM 3's); ``ValueError`` naming the known ones."""
    try:
        return PRESETS[preset]()
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; known presets: {sorted(PRESETS)}") from None
