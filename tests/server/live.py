"""A real uvicorn process serving an app of this repository, for the tests of the HTTP edge.

``tests.clients.conftest.start_server`` serves ``server.main:app`` only; these tests also serve the real app
with one extra route that fails on purpose (``tests.server.faulty_app``), so the launcher takes the target.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.clients.conftest import LiveServer, free_port, stop_server

REPO = Path(__file__).resolve().parents[2]

__all__ = ["LiveServer", "start_app", "stop_server", "rss_mb"]


def start_app(
    tmp: Path, extra_env: dict[str, str], target: str = "server.main:app", factory: bool = False, timeout_s: float = 180
) -> LiveServer:
    """Start ``uvicorn <target>`` (tiny preset, random weights, CPU) on a free port; wait for the model.

    ``factory``: ``target`` names a function that builds the app (uvicorn ``--factory``)."""
    port = free_port()
    media = tmp / "media"
    media.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAM_", "SAM3_"))}
    env.update(
        SAM3_PRESET="tiny",
        SAM3_RANDOM_WEIGHTS="true",
        SAM3_DEVICE="cpu",
        SAM3_AUTO_DOWNLOAD="false",
        # the start-up warm-up is tested in tests/server/test_precision.py; here it would only slow the start
        SAM3_WARMUP="false",
        SAM_MEDIA_ROOTS=str(media),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(REPO),
    )
    env.update(extra_env)
    log_path = tmp / f"uvicorn_{port}.log"
    command = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port)]
    if factory:
        command.append("--factory")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", media, process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}:\n{server.log()}")
        try:
            health = httpx.get(f"{server.url}/health", timeout=2).json()
            if not health.get("loading"):
                assert health["model_loaded"], health
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_server(server)
    raise RuntimeError(f"the service did not come up in {timeout_s} s:\n{server.log()}")


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
