"""The one launcher of a development service for tests and benchmarks: ``uvicorn server.main:app`` (tiny preset,
random weights, CPU) in a subprocess on a free 127.0.0.1 port, and the memory of a process as /proc says it.

Benchmarks import it too (``bench/load.py``, ``bench/video_memory.py``), with the repository root on ``sys.path``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    media_root: Path
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def start_server(
    tmp: Path,
    extra_env: dict[str, str],
    wait_for_model: bool = True,
    timeout_s: float = 180,
    target: str = "server.main:app",
    factory: bool = False,
    repo: Path = REPO,
    http: str = "server.http_edge:EdgeHttpProtocol",
) -> LiveServer:
    """Start ``uvicorn <target>`` (tiny preset, random weights, CPU) on a free 127.0.0.1 port.

    ``factory``: ``target`` names a function that builds the app (uvicorn ``--factory``). ``repo``: the
    checkout whose code runs (a benchmark may measure another one). ``http``: uvicorn's ``--http`` (by default
    the protocol run_sam.sh starts it with). ``extra_env`` overrides the defaults.

    A free port can be taken by another process between ``free_port()`` and uvicorn's bind (another test run on
    the machine): uvicorn then exits with "address already in use" and the start is retried on a new port."""
    for attempt in range(3):
        try:
            return _start_once(tmp, extra_env, wait_for_model, timeout_s, target, factory, repo, http)
        except PortTaken:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class PortTaken(RuntimeError):
    """uvicorn could not bind its port (someone took it after ``free_port()``)."""


def _start_once(
    tmp: Path, extra_env: dict[str, str], wait_for_model: bool, timeout_s: float, target: str, factory: bool,
    repo: Path, http: str,
) -> LiveServer:  # fmt: skip
    port = free_port()
    media = tmp / "media"
    media.mkdir(exist_ok=True)
    # The service's settings come from this function alone, except the CPU the precision policy may assume,
    # which a whole run can state (tests/conftest.py: SAM3_CPU_BF16).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAM_", "SAM3_")) or k == "SAM3_CPU_BF16"}
    env.update(
        SAM3_PRESET="tiny",
        SAM3_RANDOM_WEIGHTS="true",
        SAM3_DEVICE="cpu",
        SAM3_AUTO_DOWNLOAD="false",
        SAM3_WARMUP="false",  # tested in tests/server/test_precision.py; here it would only slow the start
        SAM_MEDIA_ROOTS=str(media),
        SAM_MAX_SESSIONS="2",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env)
    log_path = tmp / f"uvicorn_{port}.log"
    command = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port), "--http", http]
    if factory:
        command.append("--factory")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=tmp,  # not the repo: the app must not depend on its working directory (no .env there either)
            env={**env, "PYTHONPATH": str(repo)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", media, process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = server.log()
            kind = PortTaken if "address already in use" in log.lower() else RuntimeError
            raise kind(f"uvicorn exited with {process.returncode}:\n{log}")
        try:
            health = httpx.get(f"{server.url}/health", timeout=2).json()
            if not wait_for_model or not health.get("loading"):
                return server
        except (httpx.HTTPError, ValueError):  # not up yet, or another process answers on the port (not JSON)
            pass
        time.sleep(0.3)
    stop_server(server)
    raise RuntimeError(f"the service did not come up in {timeout_s} s:\n{server.log()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(5)


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) memory of a process in MB, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB."""
    return memory_mb(pid)[0]
