"""Fixtures for the parity tests: the official oracle (``.oracle``), a real photo, scratch directories."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import KEYS_VIDEO

# The same photo on every machine (scikit-image ships it); PARITY_PHOTO=/path/to/photo.jpg runs the parity tests
# on another one by hand (the earlier rounds' hidden photos, say), and the run prints which.
PARITY_PHOTO = os.environ.get("PARITY_PHOTO")


@dataclass(frozen=True)
class Photo:
    """A real photo saved as PNG (lossless, so both processes decode the same pixels)."""

    path: Path
    source: str
    size: tuple[int, int]  # (width, height)


def _load_photo():
    from PIL import Image

    if PARITY_PHOTO:
        return Image.open(PARITY_PHOTO).convert("RGB"), f"{PARITY_PHOTO} (PARITY_PHOTO)"
    from skimage import data

    return Image.fromarray(data.astronaut()), "skimage.data.astronaut()"


@pytest.fixture(scope="session")
def photo_full(tmp_path_factory) -> Photo:
    """The photo at its own size (used by the full-size checks)."""
    image, source = _load_photo()
    path = tmp_path_factory.mktemp("photo") / "photo_full.png"
    image.save(path)
    print(f"\nparity photo: {source} {image.size}")
    return Photo(path, source, image.size)


@pytest.fixture(scope="session")
def photo_small(tmp_path_factory) -> Photo:
    """The photo shrunk to 400 px on its long side (the tiny-preset checks; keeps the saved masks small)."""
    image, source = _load_photo()
    image.thumbnail((400, 400))
    path = tmp_path_factory.mktemp("photo") / "photo_small.png"
    image.save(path)
    print(f"\nparity photo: {source} resized to {image.size}")
    return Photo(path, f"{source} resized to {image.size}", image.size)


@pytest.fixture(scope="session")
def keys_tsv() -> Path:
    """``tests/data/keys_video.tsv.gz``: the official sam3.pt layout (name, shape, dtype per tensor)."""
    return KEYS_VIDEO
