"""Client error messages: nothing listening, 4xx from the service, 503 while the model is not loaded."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from milimo_clients import (
    NO_RETRY,
    InpaintingManager,
    SamModelNotLoaded,
    SamServiceBusy,
    SamServiceError,
    SamServiceNotRunning,
    TrackingManager,
)
from server.main import create_app
from tests.clients.conftest import free_port
from tests.server.conftest import tiny_settings


@pytest.fixture()
def image_path(tmp_path, astronaut):
    path = tmp_path / "a.png"
    Image.fromarray(astronaut[:64, :64]).save(path)
    return path


def test_refused_connection_says_the_service_is_not_running(image_path):
    port = free_port()  # bound then released: nothing listens there
    url = f"http://127.0.0.1:{port}"
    with InpaintingManager(url, retry=NO_RETRY) as sam:
        with pytest.raises(SamServiceNotRunning) as err:
            sam.get_mask_from_sam(image_path, [[5, 5]])
    message = str(err.value)
    assert f"not running at {url}" in message and "./run_sam.sh" in message
    assert err.value.status_code is None


def test_service_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("SAM_SERVICE_URL", "http://10.1.2.3:9999/")
    assert TrackingManager().base_url == "http://10.1.2.3:9999"
    monkeypatch.delenv("SAM_SERVICE_URL")
    assert InpaintingManager().base_url == "http://localhost:8001"


def test_503_reads_model_not_loaded_with_the_reason(tmp_path, image_path):
    settings = tiny_settings(random_weights=False, checkpoint=str(tmp_path / "absent.pt"), media_roots=str(tmp_path))
    with TestClient(create_app(settings), base_url="http://sam") as http:
        sam = InpaintingManager("http://sam", client=http)
        for call in (
            lambda: sam.get_mask_from_sam(image_path, [[5, 5]]),
            lambda: sam.get_mask_from_text(image_path, "face"),
            lambda: sam.detect_objects(image_path, "face"),
        ):
            with pytest.raises(SamModelNotLoaded) as err:
                call()
            assert str(err.value).startswith("model not loaded: ") and "absent.pt" in str(err.value)
            assert err.value.status_code == 503
        tracker = TrackingManager("http://sam", client=http)
        with pytest.raises(SamServiceError) as err:
            tracker.add_prompt("missing", 0, text="face")
        assert err.value.status_code == 404 and str(err.value).startswith("session_id:")
        assert tracker.stop_session("missing") is False


def test_4xx_carries_the_services_message(tmp_path, image_path):
    settings = tiny_settings(random_weights=False, checkpoint=str(tmp_path / "absent.pt"), media_roots=str(tmp_path))
    with TestClient(create_app(settings), base_url="http://sam") as http:
        tracker = TrackingManager("http://sam", client=http)
        with pytest.raises(SamServiceError) as err:
            tracker.start_session("/etc")
        assert err.value.status_code == 403 and str(err.value).startswith("video_path:")
        sam = InpaintingManager("http://sam", client=http)
        with pytest.raises(SamServiceError) as err:
            sam.get_mask_from_text(image_path, "face", confidence=2.0)
        assert err.value.status_code == 422 and "confidence" in str(err.value)


def test_unreadable_image_path_is_a_client_error(tmp_path):
    with InpaintingManager("http://127.0.0.1:9") as sam:
        with pytest.raises(SamServiceError, match="image_path"):
            sam.get_mask_from_sam(tmp_path / "nope.png", [[1, 1]])


def test_busy_error_carries_retry_after():
    err = SamServiceBusy("too many sessions", 12.0)
    assert err.status_code == 429 and err.retry_after_s == 12.0


def test_clients_import_neither_torch_nor_server():
    import subprocess
    import sys

    code = (
        "import sys, milimo_clients; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'server', 'sam3'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
