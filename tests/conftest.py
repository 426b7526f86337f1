"""Fixtures shared by every test: the tiny preset, real photos and the data under ``tests/data``.

Real photos come from scikit-image (shipped with the package). Everything else the suite needs is in the
repository (``tests/data``: the official ``sam3.pt`` key list and 8 frames of a real video), so the same
suite runs on any clone. Should a test still skip, the end of the run says so loudly (see
``pytest_terminal_summary``).
"""

from __future__ import annotations

import contextlib
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

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
def oracle() -> Path:
    """The official package's install folder (``.oracle``); skips, naming the install command, when absent."""
    from tests.parity.harness import INSTALL_HINT, ORACLE, oracle_available

    if not oracle_available():
        pytest.skip(INSTALL_HINT)
    return ORACLE


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


@pytest.fixture()
def hub_calls(monkeypatch) -> dict[str, int]:
    """Counts what a checkpoint lookup asks of the network: TCP probes of the Hub (``socket.create_connection``)
    and downloads (``hf_hub_download`` calls that are not cache reads). "Fails fast" means: no download, and at
    most the one probe, whatever this machine's speed."""
    import socket

    import huggingface_hub

    calls = {"probes": 0, "downloads": 0}
    connect, download = socket.create_connection, huggingface_hub.hf_hub_download

    def counted_connect(*args, **kwargs):
        calls["probes"] += 1
        return connect(*args, **kwargs)

    def counted_download(*args, **kwargs):
        calls["downloads"] += not kwargs.get("local_files_only", False)
        return download(*args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counted_connect)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", counted_download)
    return calls


# ---------------------------------------------------------------- the CPU the precision policy sees
# `auto` resolves to bf16 on a CPU with native bf16 and to fp32 elsewhere (sam3.device.resolve_precision). The
# service's setting SAM3_CPU_BF16 (native | emulated) states the CPU instead of probing it, so:
# * a whole run can force either resolution on any machine: `SAM3_CPU_BF16=native ./run_tests.sh` (auto -> bf16)
#   or `SAM3_CPU_BF16=emulated ./run_tests.sh` (auto -> fp32); in-process apps read it from the environment and
#   tests.clients.conftest.start_server passes it on to uvicorn;
# * a test that means to check `auto` both ways takes the `auto_policy` fixture and builds its app with
#   ``cpu_bf16=auto_policy.cpu_bf16``; what `auto` must become is stated here, not asked of the policy.
# Tests that compare numbers exactly pin SAM3_PRECISION=fp32 (precision="fp32") instead.


@dataclass(frozen=True)
class AutoPolicy:
    """One resolution of ``SAM3_PRECISION=auto`` on the CPU: the stated CPU and what auto must become there."""

    cpu_bf16: str  # SAM3_CPU_BF16
    mode: str  # /health "precision"
    autocast: torch.dtype | None  # what a reference computation enters to compute as the service does

    def context(self):
        """The autocast a reference computation enters to compute as the service does under this policy."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=self.autocast)


AUTO_POLICIES = {
    "auto-fp32": AutoPolicy("emulated", "fp32", None),  # as on an AVX2 CPU
    "auto-bf16": AutoPolicy("native", "bf16", torch.bfloat16),  # as on an AVX-512 BF16 or AMX CPU
}


@pytest.fixture(params=list(AUTO_POLICIES))
def auto_policy(request) -> AutoPolicy:
    """Both resolutions of ``auto``, whatever this machine's CPU."""
    return AUTO_POLICIES[request.param]


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
