"""Builder of SAM 3.1 (Object Multiplex): compose the parts, load ``sam3.1_multiplex.pt`` strictly, pick a device.

The detector is SAM 3's, built by :func:`sam3.build.build_detector` on a three-head neck; the tracker is
:class:`~sam3.modeling.multiplex.tracker.MultiplexTracker`. Registered as version ``"sam3.1"`` in
:mod:`sam3.registry`; the keywords are those of :func:`sam3.build.build_video_model`.
"""

from __future__ import annotations

import os

import torch

from sam3.build import build_detector, materialize
from sam3.config_multiplex import Sam31Config, get_multiplex_config
from sam3.modeling.multiplex.tracker import MultiplexTrackerHolder
from sam3.modeling.sam31_model import Sam31Model
from sam3.modeling.text.tokenizer import Tokenizer
from sam3.modeling.vision.tri_neck import TriFpnNeck
from sam3.modeling.vision.vit import ViT
from sam3.registry import SAM3_1


def compose_multiplex_model(config: Sam31Config, tokenizer=None) -> Sam31Model:
    """The whole SAM 3.1 model from its parts (random init; build under ``torch.device("meta")`` to skip it)."""
    neck = TriFpnNeck(ViT(config.vision), config.vision, config.d_model)
    detector = build_detector(config.detector_config(), neck=neck)
    return Sam31Model(config, detector, MultiplexTrackerHolder(config), tokenizer=tokenizer)


def build_multiplex_model(
    checkpoint_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    load_from_HF: bool = True,
    preset: str = "sam3",
    bpe_path: str | os.PathLike | None = None,
    eval_mode: bool = True,
    random_weights: bool = False,
    config: Sam31Config | None = None,
) -> Sam31Model:
    """Build SAM 3.1. Weights: ``checkpoint_path`` (``sam3.1_multiplex.pt``), else ``models/sam3.1/``, the
    Hugging Face cache and, if ``load_from_HF``, a download of ``facebook/sam3.1``; loaded strictly.
    ``random_weights=True`` gives a randomly initialised model (tests, development). ``config`` overrides
    ``preset`` (``sam3``: the released sizes, ``tiny``)."""
    config = config if config is not None else get_multiplex_config(preset)
    tokenizer = Tokenizer(bpe_path, context_length=config.text.context_length)
    compose = lambda: compose_multiplex_model(config, tokenizer)  # noqa: E731
    return materialize(compose, checkpoint_path, device, load_from_HF, eval_mode, random_weights, SAM3_1)


__all__ = ["build_multiplex_model", "compose_multiplex_model"]
