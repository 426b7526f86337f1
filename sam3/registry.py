"""One registry from a model version to its builder and its released checkpoint.

As segment-anything's ``sam_model_registry`` and sam2's ``HF_MODEL_ID_TO_FILENAMES``: a version name
(``"sam3"``, ``"sam3.1"``) is the single key for what to build and which file to load. The builders are
named as ``"module:function"`` and imported on first use, so this module stays a leaf (the checkpoint
lookup, the service settings and the builders may all read it).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelVersion:
    """A released model: how to build it and where its weights are published."""

    name: str  # the version name, e.g. "sam3.1"
    builder: str  # "module:function", a builder with the keywords of sam3.build.build_video_model
    hub_repo: str  # Hugging Face repository of the released checkpoint
    checkpoint_filename: str  # the checkpoint's file name in that repository
    hub_filenames: tuple[str, ...]  # every file of that repository we can load

    @property
    def default_local_path(self) -> Path:
        """Where the service looks first: ``models/<version>/<file>`` (relative to the working directory)."""
        return Path("models") / self.name / self.checkpoint_filename

    def load_builder(self):
        module, _, function = self.builder.partition(":")
        return getattr(import_module(module), function)


SAM3 = ModelVersion(
    name="sam3",
    builder="sam3.build:build_video_model",
    hub_repo="facebook/sam3",
    checkpoint_filename="sam3.pt",
    hub_filenames=("sam3.pt", "model.safetensors"),
)
SAM3_1 = ModelVersion(
    name="sam3.1",
    builder="sam3.build_multiplex:build_multiplex_model",
    hub_repo="facebook/sam3.1",
    checkpoint_filename="sam3.1_multiplex.pt",
    hub_filenames=("sam3.1_multiplex.pt",),
)
MODEL_VERSIONS: dict[str, ModelVersion] = {v.name: v for v in (SAM3, SAM3_1)}
DEFAULT_VERSION = SAM3.name


def get_version(name: str) -> ModelVersion:
    """The registered version ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return MODEL_VERSIONS[name]
    except KeyError:
        raise ValueError(f"unknown model version {name!r}; known: {', '.join(MODEL_VERSIONS)}") from None


def build_model(version: str = DEFAULT_VERSION, **kwargs: Any):
    """Build the model of ``version`` (video-capable: detector + tracker) with its builder's keywords
    (``checkpoint_path``, ``preset``, ``device``, ``random_weights``, ...)."""
    return get_version(version).load_builder()(**kwargs)


__all__ = ["DEFAULT_VERSION", "MODEL_VERSIONS", "SAM3", "SAM3_1", "ModelVersion", "build_model", "get_version"]
