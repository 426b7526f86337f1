"""Builders: compose the model's parts, load the weights, move the model to a device.

``build_image_model`` and ``build_video_model`` return the same :class:`Sam3Model`; the video predictor
wraps it. (The official names and defaults, ``build_sam3_image_model`` ..., are the compatibility layer in
:mod:`sam3.model_builder`; :mod:`sam3.registry` maps a model version to its builder.) With a checkpoint the model is constructed on the meta device (no random init of
860M parameters that would be overwritten) and the checkpoint tensors are assigned strictly.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from sam3.checkpoint import CheckpointNotFoundError, load_checkpoint, resolve_checkpoint
from sam3.config import Sam3Config, get_config
from sam3.device import resolve_device
from sam3.modeling.detector.decoder import DetrDecoder
from sam3.modeling.detector.detector import DetectorTransformer, Sam3Detector
from sam3.modeling.detector.fusion_encoder import FusionEncoder
from sam3.modeling.detector.geometry_encoder import GeometryEncoder
from sam3.modeling.detector.scoring import DotProductScoring
from sam3.modeling.detector.segmentation_head import SegmentationHead
from sam3.modeling.sam3_model import Sam3Model
from sam3.modeling.text.text_encoder import TextEncoder
from sam3.modeling.text.tokenizer import Tokenizer
from sam3.modeling.tracker.tracker import Sam3Tracker
from sam3.modeling.vision.neck import DualFpnNeck
from sam3.modeling.vision.vit import ViT
from sam3.modeling.vl_backbone import VisionLanguageBackbone
from sam3.registry import SAM3, ModelVersion


def build_detector(config: Sam3Config, with_tracker_neck: bool = True, neck: nn.Module | None = None) -> Sam3Detector:
    """The detector with its vision-language backbone; ``with_tracker_neck`` adds ``sam2_convs``.

    ``neck`` replaces the dual neck (SAM 3.1 passes its three-head neck over the same trunk)."""
    if neck is None:
        neck = DualFpnNeck(ViT(config.vision), config.vision, config.d_model, with_sam2_neck=with_tracker_neck)
    backbone = VisionLanguageBackbone(neck, TextEncoder(config.text, config.d_model))
    transformer = DetectorTransformer(
        FusionEncoder(config.encoder, config.d_model), DetrDecoder(config.decoder, config.d_model)
    )
    return Sam3Detector(
        backbone=backbone,
        geometry_encoder=GeometryEncoder(config.geometry, config.d_model),
        transformer=transformer,
        segmentation_head=SegmentationHead(config.scoring, config.d_model),
        dot_prod_scoring=DotProductScoring(config.scoring, config.d_model),
    )


def build_tracker(config: Sam3Config) -> Sam3Tracker:
    """The SAM-2 style tracker (memory attention, memory encoder, SAM prompt encoder and mask decoder)."""
    return Sam3Tracker(config)


def compose_sam3_model(
    config: Sam3Config,
    enable_inst_interactivity: bool = True,
    tokenizer=None,
    model_class: type[Sam3Model] = Sam3Model,
) -> Sam3Model:
    """The whole model from its parts (random init; build under ``torch.device("meta")`` to skip it).

    ``model_class`` lets the drop-in API (``sam3.model.sam3_image.Sam3Image``) add the official conveniences.
    """
    detector = build_detector(config, with_tracker_neck=enable_inst_interactivity)
    tracker = build_tracker(config) if enable_inst_interactivity else None
    return model_class(config, detector, tracker, tokenizer=tokenizer)


def build_image_model(
    checkpoint_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    enable_inst_interactivity: bool = True,
    load_from_HF: bool = True,  # the official spelling
    preset: str = "sam3",
    bpe_path: str | os.PathLike | None = None,
    eval_mode: bool = True,
    random_weights: bool = False,
    config: Sam3Config | None = None,
    model_class: type[Sam3Model] = Sam3Model,
) -> Sam3Model:
    """Build SAM 3 for images (text / box prompts, and clicks when ``enable_inst_interactivity``).

    Weights: ``checkpoint_path`` (``sam3.pt`` or a transformers ``model.safetensors``); without one, the
    usual places and, if ``load_from_HF``, a download of ``facebook/sam3`` (see
    :func:`sam3.checkpoint.resolve_checkpoint`). ``random_weights=True`` gives a randomly initialised
    model instead (tests, development); it cannot be combined with a checkpoint path.
    ``device`` None picks cuda > mps > cpu (``SAM3_DEVICE`` overrides). ``config`` overrides ``preset``.
    Raises ``CheckpointNotFoundError`` when no checkpoint can be found, ``CheckpointError`` when it does
    not fit the model.
    """
    config = config if config is not None else get_config(preset)
    tokenizer = Tokenizer(bpe_path, context_length=config.text.context_length)
    return materialize(
        lambda: compose_sam3_model(config, enable_inst_interactivity, tokenizer, model_class),
        checkpoint_path, device, load_from_HF, eval_mode, random_weights, SAM3,
    )  # fmt: skip


def materialize(
    compose: Callable[[], nn.Module],
    checkpoint_path: str | os.PathLike | None,
    device: str | torch.device | None,
    load_from_HF: bool,
    eval_mode: bool,
    random_weights: bool,
    version: ModelVersion,
) -> nn.Module:
    """``compose()`` with random weights, or on the meta device with ``version``'s checkpoint loaded strictly
    (:func:`sam3.checkpoint.resolve_checkpoint`); then moved to ``device`` and set to eval / train mode."""
    target = resolve_device(device)
    if random_weights:
        if checkpoint_path is not None:
            raise ValueError("random_weights=True and checkpoint_path are mutually exclusive")
        model = compose()
    else:
        path = resolve_checkpoint(checkpoint_path, auto_download=load_from_HF, version=version)
        with torch.device("meta"):
            model = compose()
        load_checkpoint(model, path)
    model.to(target)
    model.train(not eval_mode)
    return model


def build_video_model(
    checkpoint_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    load_from_HF: bool = True,  # the official spelling
    preset: str = "sam3",
    bpe_path: str | os.PathLike | None = None,
    eval_mode: bool = True,
    random_weights: bool = False,
    config: Sam3Config | None = None,
) -> Sam3Model:
    """Build SAM 3 for video: the same model with its tracker (always), for the video predictor."""
    return build_image_model(
        checkpoint_path=checkpoint_path,
        device=device,
        enable_inst_interactivity=True,
        load_from_HF=load_from_HF,
        preset=preset,
        bpe_path=bpe_path,
        eval_mode=eval_mode,
        random_weights=random_weights,
        config=config,
    )


__all__ = [
    "CheckpointNotFoundError",
    "build_detector",
    "build_image_model",
    "build_video_model",
    "build_tracker",
    "compose_sam3_model",
    "materialize",
]
