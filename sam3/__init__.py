"""SAM 3: our implementation of Meta's Segment Anything Model 3 (image detection, clicks, video tracking).

``import sam3`` stays light (no torch, no model code): ``sam3.build_sam3_image_model`` (the official
top-level name, from :mod:`sam3.model_builder`) and the configs are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sam3.config import Sam3Config, get_config
    from sam3.model_builder import build_sam3_image_model

_LAZY = {
    "build_sam3_image_model": "sam3.model_builder",
    "Sam3Config": "sam3.config",
    "get_config": "sam3.config",
}

__all__ = ["Sam3Config", "build_sam3_image_model", "get_config"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sam3' has no attribute {name!r}")
