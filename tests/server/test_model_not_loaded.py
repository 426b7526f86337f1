"""A model that cannot load leaves a running service that says why: /health 200, model endpoints 503."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from server.main import create_app
from tests.server.conftest import tiny_settings
from tests.server.media import encode


def test_missing_checkpoint_without_download(unloaded_client: TestClient, astronaut):
    health = unloaded_client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "running"
    assert body["model_loaded"] is False and body["processor_ready"] is False
    assert "not found" in body["error"] and "SAM3_AUTO_DOWNLOAD" in body["error"]

    image = {"image": ("a.png", encode(astronaut[:64, :64]), "image/png")}
    for path, data in (
        ("/predict/mask", {"points": "[[5, 5]]"}),
        ("/detect", {"text": "face"}),
        ("/segment/text", {"text": "face"}),
    ):
        response = unloaded_client.post(path, files=image, data=data)
        assert response.status_code == 503, (path, response.text)
        assert response.json()["detail"].startswith("model not loaded: ")
        assert "not found" in response.json()["detail"]


def test_track_start_is_503_without_a_model(unloaded_client: TestClient, tmp_path, astronaut):
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(astronaut[:64, :64]).save(frames / "0.jpg")
    response = unloaded_client.post("/track/start", json={"video_path": str(frames)})
    assert response.status_code == 503
    assert response.json()["detail"].startswith("model not loaded: ")


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint" * 100])
def test_corrupt_checkpoint(tmp_path, content):
    checkpoint = tmp_path / "sam3.pt"
    checkpoint.write_bytes(content)
    settings = tiny_settings(random_weights=False, checkpoint=str(checkpoint))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        body = client.get("/health").json()
        assert body["model_loaded"] is False and body["error"]
        response = client.post("/detect", files={"image": ("a.png", b"x", "image/png")}, data={"text": "a"})
        assert response.status_code == 503 and response.json()["detail"].startswith("model not loaded: ")


def test_bad_device_setting_is_reported(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the test needs a device that is missing")
    with TestClient(create_app(tiny_settings(device="cuda")), raise_server_exceptions=False) as client:
        body = client.get("/health").json()
        assert body["model_loaded"] is False and "cuda" in body["error"].lower()


def test_background_loading_reports_progress(tmp_path):
    settings = tiny_settings(random_weights=False, checkpoint=str(tmp_path / "nope.pt"), load_in_background=True)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        first = client.get("/health")
        assert first.status_code == 200  # answers while (or after) loading
        client.app.state.models.wait_loaded(30)
        body = client.get("/health").json()
        assert body["loading"] is False and body["model_loaded"] is False and "not found" in body["error"]
