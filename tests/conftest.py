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
def astronaut() -> np.ndarray:
    """A real 512x512 RGB photo (HxWx3 uint8)."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    """A real 400x600 RGB photo (HxWx3 uint8), not square."""
    from skimage import data

    return data.coffee()
