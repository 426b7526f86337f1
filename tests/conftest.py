"""Fixtures shared by every test: the tiny preset, real photos and the data under ``tests/data``.

Real photos come from scikit-image (shipped with the package). Everything else the suite needs is in the
repository (``tests/data``: the official ``sam3.pt`` key list and 8 frames of a real video), so the same
suite runs on any clone. Should a test still skip, the end of the run says so loudly (see
``pytest_terminal_summary``).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
KEYS_VIDEO = DATA / "keys_video.tsv.gz"  # name, shape, dtype of every tensor of Meta's sam3.pt (1465 rows)
KEYS_SAM31 = DATA / "keys_sam31.tsv.gz"  # the same for the upstream SAM 3.1 model (sam3.1_multiplex.pt, 1623 rows)
VIDEO_FRAMES = DATA / "video_0001"  # the first 8 frames (1280x720 JPEG) of a real video


def read_keys_video(path: Path = KEYS_VIDEO) -> list[tuple[str, tuple[int, ...], str]]:
    """The rows of ``tests/data/keys_video.tsv.gz`` (or another key list of that format): (name, shape, dtype)."""
    rows = []
    for line in gzip.decompress(path.read_bytes()).decode().splitlines():
        if line.strip():
            name, shape, dtype = line.split("\t")[:3]
            rows.append((name, tuple(int(s) for s in shape.strip("() ").split(",") if s.strip()), dtype))
    return rows


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
    """name -> (shape, dtype) of the ``sam3.pt`` tensors under ``prefix`` (prefix stripped)."""
    return {name[len(prefix) :]: (shape, dtype) for name, shape, dtype in read_keys_video() if name.startswith(prefix)}


def checkpoint_shapes(prefix: str = "") -> dict[str, tuple[int, ...]]:
    """name -> shape of the ``sam3.pt`` tensors under ``prefix`` (see ``checkpoint_entries``)."""
    return {name: shape for name, (shape, _) in checkpoint_entries(prefix).items()}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """A skipped test is a check that did not run: list every one at the end, in a banner that cannot be missed."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reporter = terminalreporter
    reporter.write_sep("!", f"{len(skipped)} TEST(S) SKIPPED: THIS RUN DID NOT CHECK EVERYTHING", red=True, bold=True)
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reporter.write_line(f"  {report.nodeid}: {reason.removeprefix('Skipped: ')}", red=True)
    reporter.write_line(
        "  (./run_tests.sh installs what the quick suite needs: the venv and the official oracle in .oracle)"
    )
    reporter.write_sep("!", red=True, bold=True)
