"""bench/device_check.py runs end to end at the tiny preset on this CPU (its GPU figures are measured where a GPU
is lent): image steps, then video propagation with clicked objects, without and with a text concept. The
CUDA-only measurements say why they are skipped, and the per-frame operator / host-read counts stand in."""

from __future__ import annotations

import pytest

from tests.bench.loader import load_bench


@pytest.fixture(scope="module")
def device_check():
    return load_bench("device_check")


def test_smoke_run_tiny_cpu(device_check, tmp_path, capsys):
    argv = ["--preset", "tiny", "--device", "cpu", "--no-official", "--modes", "fp32", "--repeats", "1"]
    argv += ["--objects", "1,2", "--frames", "4", "--warmup", "0", "--workdir", str(tmp_path)]
    rows = device_check.main(argv)
    out = capsys.readouterr().out
    row = rows["fp32"]
    assert row["set_image"] > 0 and row["text"] > 0 and row["click"] > 0
    assert set(row["video"]) == {(1, False), (2, False), (1, True), (2, True)}
    for v in row["video"].values():
        assert v["fps"] > 0 and v["ops"] > 100 and v["reads"] >= 0
    assert "need CUDA (cpu here): skipped" in out
    assert "official side skipped (--no-official)" in out


@pytest.mark.full  # inductor compiles the trunk and the frame step's graphs: a minute or more on 2 CPU cores
def test_smoke_run_tiny_cpu_compiled(device_check, tmp_path, capsys):
    """The ``+compile`` configuration a GPU run measures: the trunk and the per-frame tracking step compiled, the
    video warm-up over the measured object buckets, then the same steps as the plain run."""
    argv = ["--preset", "tiny", "--device", "cpu", "--no-official", "--modes", "fp32+compile", "--repeats", "1"]
    argv += ["--objects", "1,2", "--frames", "4", "--warmup", "0", "--no-text", "--workdir", str(tmp_path)]
    row = device_check.main(argv)["fp32+compile"]
    assert row["set_image"] > 0 and row["click"] > 0
    assert set(row["video"]) == {(1, False), (2, False)} and all(v["fps"] > 0 for v in row["video"].values())
    assert "fp32+compile (fp32): warm-up" in capsys.readouterr().out
