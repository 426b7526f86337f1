"""The clients install on their own: ``pip install ./clients`` into a fresh venv brings httpx and tenacity,
not torch (nor FastAPI, numpy, Pillow), and the clients import and talk to a service from there.

This test installs from the package index (pip resolves httpx and tenacity as a backend would); it needs
the network to the index and says so when the index cannot be reached."""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The test run's own PYTHONPATH points at the work tree: the installed copy must stand alone.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("clients_install")
    # A copy of what the distribution is built from, so the build leaves nothing in the work tree.
    shutil.copytree(REPO / "clients", tmp / "src" / "clients", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    shutil.copytree(
        REPO / "milimo_clients", tmp / "src" / "milimo_clients", ignore=shutil.ignore_patterns("__pycache__")
    )
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(tmp / "src" / "clients")],
        capture_output=True,
        text=True,
        timeout=600,
        env=CLEAN_ENV,
    )
    if result.returncode != 0 and (
        "NewConnectionError" in result.stderr or "No matching distribution" in result.stderr
    ):
        pytest.fail(f"pip could not reach the package index to install httpx/tenacity:\n{result.stderr[-2000:]}")
    assert result.returncode == 0, result.stdout + result.stderr
    return python


def test_clients_install_alone_without_torch(client_venv, tmp_path):
    listed = subprocess.run(
        [str(client_venv), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
        env=CLEAN_ENV,
    ).stdout
    names = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert {"milimo-clients", "httpx", "tenacity"} <= names
    assert not names & {"torch", "fastapi", "numpy", "pillow", "uvicorn", "av", "sam3-service"}, names
    code = (
        "import sys, milimo_clients as m; "
        "assert m.__file__.startswith(sys.prefix), m.__file__; "
        "from milimo_clients import AsyncInpaintingManager, AsyncTrackingManager, InpaintingManager, TrackingManager; "
        "bad = [n for n in sys.modules if n.split('.')[0] in ('torch', 'server', 'sam3', 'fastapi', 'numpy', 'PIL')]; "
        "assert not bad, bad; "
        "print(m.__file__)"
    )
    # Run outside the repository, so only the installed copy can be imported.
    result = subprocess.run([str(client_venv), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=CLEAN_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


def test_installed_clients_talk_to_a_service(client_venv, tmp_path):
    """The installed copy (no numpy/Pillow) against a scripted server: a retried 429, then a mask on disk."""
    from tests.clients import scripted_server as s

    server = s.ScriptedServer().start()
    server.script("/predict/mask", s.busy("0"), s.png)
    code = (
        "import asyncio, sys; from milimo_clients import AsyncInpaintingManager, RetryPolicy\n"
        "async def main():\n"
        "    async with AsyncInpaintingManager(sys.argv[1], retry=RetryPolicy(backoff_initial_s=0.05)) as sam:\n"
        "        print(await sam.get_mask_from_sam(b'\\x89PNG\\r\\n\\x1a\\n', [[1, 2]], output_path=sys.argv[2]))\n"
        "asyncio.run(main())\n"
    )
    try:
        result = subprocess.run(
            [str(client_venv), "-c", code, server.url, str(tmp_path / "m.png")],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
            env=CLEAN_ENV,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "m.png").read_bytes() == s.PNG_1x1 and len(server.hits("/predict/mask")) == 2
