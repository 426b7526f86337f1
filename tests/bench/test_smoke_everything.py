"""Smoke run of bench/everything.py at the tiny preset (seconds): the script runs, both sides find the same
number of masks, and every figure it prints is a positive number. Speed itself is not asserted here."""

from __future__ import annotations

import math

import pytest
import torch

from tests.parity.sam2_adapter import INSTALL_HINT, sam2_available

pytestmark = pytest.mark.skipif(not sam2_available(), reason=INSTALL_HINT)


def test_bench_everything_tiny(capsys):
    from bench.everything import main

    with torch.inference_mode():
        rows = main(["--preset", "tiny", "--points-per-side", "4", "--points-per-batch", "8"])
    assert [r["setting"] for r in rows] == ["defaults", "open"]
    assert rows[1]["masks"] > 0  # the open setting keeps every mask NMS does not merge
    for row in rows:
        for key in ("ours_s", "sam2_s", "ratio", "ours_per_1000", "sam2_per_1000"):
            assert math.isfinite(row[key]) and row[key] > 0
    assert "ratio" in capsys.readouterr().out
