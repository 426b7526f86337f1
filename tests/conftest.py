"""Fixtures shared by every test: the tiny preset and real photos.

Real photos come from scikit-image (shipped with the package). The team's shared data folder
(../shared/data, beside the checkout) is optional: tests that use it say so when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path | None:
    """A path under ../shared, or None when the shared folder is not beside this checkout."""
    p = SHARED.joinpath(*parts)
    return p if p.exists() else None


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny():
    """The tiny preset's config."""
    from sam3.config import get_config

    return get_config("tiny")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real 512x512 RGB photo (HxWx3 uint8)."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    """A real 400x600 RGB photo (HxWx3 uint8), not square."""
    from skimage import data

    return data.coffee()


def checkpoint_entries(prefix: str = "") -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of the ``sam3.pt`` tensors under ``prefix`` (prefix stripped), read from
    ../shared/reference/keys_video.tsv; the calling test is skipped, saying so, when that file is absent."""
    path = shared_path("reference", "keys_video.tsv")
    if path is None:
        pytest.skip(f"{SHARED / 'reference' / 'keys_video.tsv'} is not beside this checkout")
    out = {}
    for line in path.read_text().splitlines():
        name, shape, dtype = line.split("\t")
        if name.startswith(prefix):
            out[name[len(prefix) :]] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype)
    return out


def checkpoint_shapes(prefix: str = "") -> dict[str, tuple[int, ...]]:
    """name -> shape of the ``sam3.pt`` tensors under ``prefix`` (see ``checkpoint_entries``)."""
    return {name: shape for name, (shape, _) in checkpoint_entries(prefix).items()}
