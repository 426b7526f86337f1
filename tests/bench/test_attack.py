"""A seconds-long smoke run of ``bench/attack.py`` (tiny preset, a few requests per surface): the script runs to
its end against a real uvicorn and its figures meet the issue's targets (0 5xx, 0 hangs, sessions never above the
cap). The full run's figures are in ``bench/README.md``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_attack_smoke_run():
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "attack.py"), "--smoke", "--hang-s", "60"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    print(run.stdout[-4000:], run.stderr[-2000:])
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    total = re.search(r"all\s+requests\s+(\d+)\s+5xx (\d+)\s+hangs (\d+)", run.stdout)
    assert total and int(total[1]) > 100 and (int(total[2]), int(total[3])) == (0, 0), run.stdout
    for surface in ("listing", "admission", "streams", "methods", "paths", "frames", "headers"):
        assert re.search(rf"^\s+{surface}\s+requests\s+[1-9]", run.stdout, re.M), surface
    assert "1 different answer(s)" in run.stdout
    sessions = re.search(r"sessions open at most: (\d+) \(cap (\d+)\)", run.stdout)
    assert sessions and int(sessions[1]) <= int(sessions[2])
    assert re.search(r"server RSS: start \d+ MB, baseline \d+ MB, peak \d+ MB, after \d+ MB", run.stdout)
