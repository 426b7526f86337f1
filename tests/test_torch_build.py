"""``scripts/torch_build.sh``, the one rule both ``run_sam.sh`` and ``run_tests.sh`` use for the torch build,
and its torch/torchvision check (a mismatched pair fails the model load with "operator torchvision::nms does
not exist"; the scripts stop before that and say how to fix it)."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNIPPET = REPO / "scripts" / "torch_build.sh"


def bash(command: str, path_dirs: list[Path] = (), **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("TORCH_INDEX_URL", "PYTHONPATH")}
    base["PATH"] = os.pathsep.join([*map(str, path_dirs), "/usr/bin", "/bin"])
    base.update(env)
    return subprocess.run(
        ["bash", "-c", f"source {SNIPPET}; {command}"], env=base, capture_output=True, text=True, timeout=120
    )


def test_both_scripts_choose_the_build_with_the_same_snippet():
    for script in ("run_sam.sh", "run_tests.sh"):
        text = (REPO / script).read_text()
        assert "source scripts/torch_build.sh" in text and "install_torch" in text and "check_torch_pair" in text
        assert "whl/cpu" not in text and "nvidia-smi" not in text  # the rule lives in the snippet only


@pytest.fixture
def local_index(tmp_path):
    """An answering wheel index on 127.0.0.1 standing in for the CPU index (this machine has no internet)."""
    (tmp_path / "www" / "whl" / "cpu").mkdir(parents=True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(sys.platform != "linux", reason="the CPU-build rule is for Linux")
def test_cpu_build_without_a_gpu_when_its_index_answers_else_pips_own_config(tmp_path, local_index):
    python = {"PYTHON": sys.executable}
    # no nvidia-smi on PATH and the index answers: the CPU build
    assert bash("torch_index_url", CPU_TORCH_INDEX=local_index, **python).stdout.strip() == local_index
    # the index does not answer (a machine without internet): nothing, so pip resolves from its own configuration
    # (with the unreachable index pip took a torch from its find-links beside a torchvision built for another)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{closed.getsockname()[1]}/whl/cpu"
    closed.close()
    assert bash("torch_index_url", CPU_TORCH_INDEX=dead, **python).stdout.strip() == ""
    gpu = tmp_path / "gpu"
    gpu.mkdir()
    (gpu / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    (gpu / "nvidia-smi").chmod(0o755)
    assert bash("torch_index_url", [gpu], CPU_TORCH_INDEX=local_index, **python).stdout.strip() == ""  # PyPI's CUDA
    chosen = "https://download.pytorch.org/whl/cu128"
    assert bash("torch_index_url", [gpu], TORCH_INDEX_URL=chosen).stdout.strip() == chosen


def test_a_matching_pair_passes():
    assert bash(f"check_torch_pair {sys.executable}").returncode == 0


def test_a_mismatched_pair_is_refused_with_the_fix(tmp_path, local_index):
    # torchvision built for another torch: its compiled operators are missing (what torch reports then)
    fake = tmp_path / "torchvision"
    (fake / "ops").mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '0.0.1+other'\n")
    (fake / "ops" / "__init__.py").write_text(
        "def nms(*args):\n    raise RuntimeError('operator torchvision::nms does not exist')\n"
    )
    result = bash(
        f"check_torch_pair {sys.executable}",
        PYTHONPATH=str(tmp_path),
        CPU_TORCH_INDEX=local_index,
        PYTHON=sys.executable,
    )
    assert result.returncode == 1
    assert "torchvision 0.0.1+other" in result.stderr and "torchvision::nms does not exist" in result.stderr
    assert f"pip install --force-reinstall torch torchvision --index-url {local_index}" in result.stderr
