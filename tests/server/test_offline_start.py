"""An offline start without weights: fails fast (no half-minute of retries) and names both ways out."""

from __future__ import annotations

from fastapi.testclient import TestClient

from server.main import create_app
from tests.server.conftest import tiny_settings


def test_offline_start_reports_both_ways_out_quickly(tmp_path, monkeypatch, hub_calls):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    settings = tiny_settings(random_weights=False, auto_download=True, checkpoint=str(tmp_path / "models" / "sam3.pt"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        body = client.get("/health").json()
    assert hub_calls == {"probes": 0, "downloads": 0}  # nothing to retry, so nothing to wait for
    assert body["model_loaded"] is False
    error = body["error"]
    assert "checkpoint not found" in error and "HF_HUB_OFFLINE" in error
    assert str(tmp_path / "models" / "sam3.pt") in error and "hf auth login" in error
    assert "SAM3_PRESET=tiny SAM3_RANDOM_WEIGHTS=true" in error
