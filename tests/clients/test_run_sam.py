"""``./run_sam.sh`` started from another folder: the media root is that folder (not the repository the script
changes into), and the start-up log says which roots are allowed."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest

from tests.clients.conftest import REPO, free_port


@pytest.mark.skipif(
    not (REPO / ".venv" / "bin" / "python").exists(),
    reason="no .venv in the checkout: run_sam.sh would install one (./run_tests.sh creates it)",
)
def test_media_root_is_the_launch_folder(tmp_path):
    if (REPO / ".env").exists() and "SAM_MEDIA_ROOTS" in (REPO / ".env").read_text():
        pytest.skip("the checkout's .env sets SAM_MEDIA_ROOTS")
    launch = tmp_path / "my videos"
    launch.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAM_", "SAM3_"))}
    env.update(
        SAM3_PRESET="tiny",
        SAM3_RANDOM_WEIGHTS="true",
        SAM3_DEVICE="cpu",
        SAM3_WARMUP="false",
        SAM_SERVICE_PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path / "run_sam.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["bash", str(REPO / "run_sam.sh")], cwd=launch, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json().get("model_loaded"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        log_text = log_path.read_text(errors="replace")
        assert process.poll() is None, log_text
        assert f"(SAM_MEDIA_ROOTS): {launch.resolve()}" in log_text, log_text
        outside = httpx.post(f"http://127.0.0.1:{port}/track/start", json={"video_path": str(REPO / "README.md")})
        assert outside.status_code == 403, outside.text  # the repository is no longer a media root
    finally:
        process.terminate()
        process.wait(20)
