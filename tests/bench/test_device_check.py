"""bench/device_check.py runs end to end at the tiny preset on this CPU (its GPU figures are measured where a GPU
is lent): image steps, then video propagation with clicked objects, without and with a text concept. The
CUDA-only measurements say why they are skipped, and the per-frame operator / host-read counts stand in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.loader import load_bench


@pytest.fixture(scope="module")
def device_check():
    return load_bench("device_check")


def test_smoke_run_tiny_cpu(device_check, tmp_path, capsys):
    record = tmp_path / "check.jsonl"
    argv = ["--preset", "tiny", "--device", "cpu", "--no-official", "--modes", "fp32", "--repeats", "1"]
    argv += ["--objects", "1,2", "--frames", "4", "--warmup", "0", "--workdir", str(tmp_path), "--json", str(record)]
    rows = device_check.main(argv)
    out = capsys.readouterr().out
    row = rows["fp32"]
    assert row["set_image"] > 0 and row["text"] > 0 and row["click"] > 0
    assert set(row["video"]) == {(1, False), (2, False), (1, True), (2, True)}
    for v in row["video"].values():
        assert v["fps"] > 0 and v["ops"] > 100 and v["reads"] >= 0
    assert "need CUDA (cpu here): skipped" in out
    assert "official side skipped (--no-official)" in out
    # --json: every measurement as a line, the same figures as returned
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(x["kind"], x["mode"]) for x in lines] == [("image", "fp32")] + [("video", "fp32")] * 4
    assert lines[0]["click"] == row["click"] and lines[0]["score_diff"] == 0.0
    assert {(x["objects"], x["text"]): x["fps"] for x in lines[1:]} == {k: v["fps"] for k, v in row["video"].items()}


def test_past_the_deadline_nothing_more_starts(device_check, tmp_path, capsys):
    argv = ["--preset", "tiny", "--device", "cpu", "--no-official", "--modes", "fp32,auto", "--deadline", "0"]
    argv += ["--workdir", str(tmp_path), "--frames", "3"]
    assert device_check.main(argv) == {}
    out = capsys.readouterr().out
    assert "deadline (0 s) passed: fp32 not measured" in out and "deadline (0 s) passed: auto not measured" in out


def test_the_device_kit_runs_the_check_and_keeps_its_output(tmp_path):
    """``bench/device_kit.sh run``, as on a lent machine but on this CPU: ``python3`` from PATH, no wheels in the kit
    (the lent machine's are installed by it, tested by hand), the log and the JSON lines written into ``$OUT``; the
    caller's arguments override the kit's ``--preset sam3``."""
    root = Path(__file__).resolve().parents[2]
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        KIT=str(tmp_path / "kit"),
        OUT=str(tmp_path / "out"),
    )
    args = ["--preset", "tiny", "--device", "cpu", "--modes", "fp32", "--objects", "1", "--frames", "3"]
    args += ["--warmup", "0", "--repeats", "1", "--no-text", "--workdir", str(tmp_path / "work")]
    proc = subprocess.run(
        ["bash", str(root / "bench" / "device_kit.sh"), "run", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (tmp_path / "out" / "device_check.log").read_text()
    assert log == proc.stdout
    assert "device cpu; preset tiny" in log and "official side skipped (it runs on CUDA only)" in log
    lines = [json.loads(line) for line in (tmp_path / "out" / "device_check.jsonl").read_text().splitlines()]
    assert [(x["kind"], x.get("objects")) for x in lines] == [("image", None), ("video", 1)]
    assert lines[1]["fps"] > 0


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


def test_a_failed_measurement_keeps_the_others_and_fails_the_run_at_its_end(device_check, tmp_path, capsys):
    """On a lent machine one failure must not cost the other figures: a video too short for its warm-up fails in
    each configuration, the image steps and the next configuration are still measured and recorded, and the run
    raises at its end, naming what failed."""
    record = tmp_path / "check.jsonl"
    argv = ["--preset", "tiny", "--device", "cpu", "--no-official", "--modes", "fp32,auto", "--repeats", "1"]
    argv += ["--objects", "1", "--no-text", "--frames", "2", "--warmup", "3", "--workdir", str(tmp_path)]
    with pytest.raises(RuntimeError, match=r"2 measurement\(s\) failed \(above\): fp32 video 1 objects, auto video"):
        device_check.main([*argv, "--json", str(record)])
    out = capsys.readouterr().out
    assert "fp32 video 1 objects failed:" in out and "the video is too short" in out
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    kinds = [(x["kind"], x.get("mode")) for x in lines]
    assert kinds == [("image", "fp32"), ("error", None), ("image", "auto"), ("error", None)]
    assert lines[1]["what"] == "fp32 video 1 objects" and "too short" in lines[1]["error"]
