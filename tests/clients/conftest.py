"""A real service: ``uvicorn server.main:app`` in a subprocess on a free 127.0.0.1 port (tiny preset,
random weights), shared by the client tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


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
) -> LiveServer:
    """Start ``uvicorn <target>`` (tiny preset, random weights, CPU) on a free 127.0.0.1 port.

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
        SAM3_WARMUP="false",  # tested in tests/server/test_precision.py; here it would only slow the start
        SAM_MEDIA_ROOTS=str(media),
        SAM_MAX_SESSIONS="2",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env)
    log_path = tmp / f"uvicorn_{port}.log"
    command = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--http", "server.http_edge:EdgeHttpProtocol"]  # as run_sam.sh starts it
    if factory:
        command.append("--factory")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=tmp,  # not the repo: the app must not depend on its working directory (no .env there either)
            env={**env, "PYTHONPATH": str(REPO)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", media, process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}:\n{server.log()}")
        try:
            health = httpx.get(f"{server.url}/health", timeout=2).json()
            if not wait_for_model or not health.get("loading"):
                return server
        except httpx.HTTPError:
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


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("live"), {})
    health = httpx.get(f"{server.url}/health").json()
    assert health["model_loaded"], f"model failed to load: {health['error']}\n{server.log()}"
    yield server
    stop_server(server)
