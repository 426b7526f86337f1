"""A smoke run of every benchmark under ``bench/`` at the tiny preset: each script runs end to end against
today's APIs (``bench/device_check.py`` once broke unseen when the session API changed) and prints its table.
The figures are not checked here: speed is what the benchmarks themselves report, on a named machine.

Scripts with an official side run it too (the oracle in ``.oracle``, at the tiny preset). Scripts smoke-tested
by a file of their own are listed in ``ELSEWHERE``; ``test_every_bench_script_has_a_smoke_run`` keeps the lists
complete.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import VIDEO_FRAMES

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"

# script -> (arguments, a line its output must contain). {photo} and {work} are filled in per run.
SMOKE = {
    "click_latency.py": (["--preset", "tiny", "--repeats", "2", "--image", "{photo}"], "stages of the fast click"),
    "image_latency.py": (
        ["--preset", "tiny", "--repeats", "1", "--image", "{photo}", "--workdir", "{work}"],
        "check that both sides did the same work",
    ),
    "precision_quality.py": (
        ["--preset", "tiny", "--image", "{photo}", "--workdir", "{work}"],
        "ours fp32 vs official fp32",
    ),
    "int8_floor.py": (
        ["--preset", "tiny", "--image", "{photo}", "--workdir", "{work}", "--threads", "1"],
        "vs ours fp32",
    ),
    "parity_full.py": (
        ["--preset", "tiny", "--image", "{photo}", "--workdir", "{work}", "--repeat-text", "1"],
        "total wall time",
    ),
    "video_propagation.py": (
        ["--preset", "tiny", "--frames", "3", "--video", str(VIDEO_FRAMES), "--workdir", "{work}", "--objects", "1"],
        "same frames and object counts on both sides: yes",
    ),
    "load.py": (["--clients", "2", "--duration", "3"], "5xx: 0; transport errors: 0"),
    "video_memory.py": (["--lengths", "6", "12", "--folder", "--workdir", "{work}"], "MB per 1000 extra frames"),
    "click_during_propagation.py": (
        ["--frames", "8", "--clicks", "2", "--every", "0.3"],
        "propagation, time per streamed frame",
    ),
}
# Modules the scripts above run (not scripts of their own), and scripts whose smoke run has its own file.
RUN_BY_OTHERS = {"latency_sides.py": "image_latency.py runs it as the official side's worker"}
ELSEWHERE = {
    "attack.py": "tests/bench/test_attack.py",
    "scale_out.py": "tests/scale/test_ray_serve.py",
    "device_check.py": "tests/bench/test_device_check.py",
    "video_overhead.py": "tests/bench/test_video_overhead.py",
    "everything.py": "tests/bench/test_smoke_everything.py",
}
WITH_OFFICIAL_SIDE = {
    "image_latency.py",
    "precision_quality.py",
    "int8_floor.py",
    "parity_full.py",
    "video_propagation.py",
}


@pytest.fixture(scope="module")
def photo(tmp_path_factory, coffee) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("bench_photo") / "coffee.jpg"
    Image.fromarray(coffee).save(path, quality=95)
    return path


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_bench_script_runs_at_the_tiny_preset(script, photo, tmp_path, request):
    if script in WITH_OFFICIAL_SIDE:
        request.getfixturevalue("oracle")  # skips, naming the install command, without the oracle
    args, expected = SMOKE[script]
    args = [a.format(photo=photo, work=tmp_path / "work") for a in args]
    run = subprocess.run(
        [sys.executable, str(BENCH / script), *args], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert expected in output, output[-4000:]


def test_video_propagation_runs_against_the_upstream_sam31(tmp_path, request):
    """``--model-version sam3.1``: ours against the upstream 3.1 predictor (needs ``.oracle31``, which CI cannot
    download: skipped there with the assemble command)."""
    from tests.parity.harness31 import ORACLE31_HINT, oracle31_available

    if not oracle31_available():
        pytest.skip(ORACLE31_HINT)
    args = ["--model-version", "sam3.1", "--preset", "tiny", "--frames", "3", "--video", str(VIDEO_FRAMES)]
    run = subprocess.run(
        [sys.executable, str(BENCH / "video_propagation.py"), *args, "--workdir", str(tmp_path), "--objects", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "same frames and object counts on both sides: yes" in output, output[-4000:]


def test_every_bench_script_has_a_smoke_run():
    scripts = {p.name for p in BENCH.glob("*.py")}
    covered = set(SMOKE) | set(RUN_BY_OTHERS) | set(ELSEWHERE)
    assert scripts == covered, {"without a smoke run": sorted(scripts - covered), "gone": sorted(covered - scripts)}
    for script, test_file in ELSEWHERE.items():
        assert (REPO / test_file).is_file() and script in (REPO / test_file).read_text(), (script, test_file)
