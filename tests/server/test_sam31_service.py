"""The service with ``SAM3_MODEL_VERSION=sam3.1``: settings, checkpoint lookup, ``/health``, the image endpoints
(text, boxes, clicks) and video sessions (text, a box, clicks on more objects than one bucket holds, streamed
propagation, removal, reset) through the real app at the tiny preset (development weights: scores spread so
objects show up), and a real uvicorn process."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from server.main import create_app
from server.settings import Settings
from tests.server.conftest import tiny_settings
from tests.server.live import start_app, stop_server
from tests.server.media import decode_mask, encode, moving_crops, write_video


def test_version_setting_and_default_checkpoint(monkeypatch):
    for name in ("SAM3_MODEL_VERSION", "SAM3_CHECKPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert Settings(_env_file=None).model_version == "sam3"
    assert Settings(_env_file=None).checkpoint == "models/sam3/sam3.pt"
    monkeypatch.setenv("SAM3_MODEL_VERSION", "sam3.1")
    assert Settings(_env_file=None).checkpoint == "models/sam3.1/sam3.1_multiplex.pt"
    monkeypatch.setenv("SAM3_CHECKPOINT", "/x/own.pt")
    assert Settings(_env_file=None).checkpoint == "/x/own.pt"
    monkeypatch.setenv("SAM3_MODEL_VERSION", "sam4")
    with pytest.raises(ValueError, match="SAM3_MODEL_VERSION"):
        Settings(_env_file=None)


@pytest.fixture(scope="module")
def client31(tmp_path_factory):
    media = tmp_path_factory.mktemp("media31")
    app = create_app(tiny_settings(model_version="sam3.1", media_roots=str(media)))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.media = media
        yield client


@pytest.fixture(scope="module")
def photo(astronaut) -> bytes:
    return encode(astronaut[:300, :400], "PNG")


def test_health_reports_the_version(client31):
    body = client31.get("/health").json()
    assert body["model_loaded"], body["error"]
    assert body["model_version"] == "sam3.1" and body["preset"] == "tiny"


def test_image_endpoints_work(client31, photo):
    files = {"image": ("a.png", photo, "image/png")}
    detect = client31.post("/detect", files=files, data={"text": "a face", "confidence": "0"})
    assert detect.status_code == 200, detect.text
    assert detect.json()["count"] > 0
    assert decode_mask(base64.b64decode(detect.json()["objects"][0]["mask"])).shape == (300, 400)
    box = client31.post("/detect", files=files, data={"boxes": "[[0.5, 0.5, 0.4, 0.6]]", "confidence": "0"})
    assert box.status_code == 200, box.text
    click = client31.post("/predict/mask", files=files, data={"points": "[[200, 150]]", "labels": "[1]"})
    assert click.status_code == 200, click.text
    assert decode_mask(click.content).shape == (300, 400)
    multi = client31.post("/predict/mask", files=files, data={"points": "[[200, 150]]", "multimask": "true"})
    assert multi.status_code == 200 and len(multi.json()["masks"]) == 3
    boxed = client31.post("/predict/mask", files=files, data={"boxes": "[0.5, 0.5, 0.4, 0.6]"})
    assert boxed.status_code == 200, boxed.text


def test_clicks_use_the_sam31_interactive_heads(client31):
    """The click path runs SAM 3.1's own heads (interactive_convs + interactive decoder), not SAM 3's."""
    model = client31.app.state.models.model
    assert model.version == "sam3.1"
    heads = model.tracker
    assert heads.sam_mask_decoder is model.tracker.model.interactive_sam_mask_decoder
    assert heads.sam_mask_decoder.iou_prediction_head.sigmoid_output is False
    assert torch.equal(heads.no_mem_embed, model.tracker.model.interactivity_no_mem_embed)


def _frames(client, sid: str, **body) -> list[dict]:
    r = client.post("/track/propagate", json={"session_id": sid, "direction": "forward", **body})
    assert r.status_code == 200, r.text
    return r.json()["frames"]


def test_video_tracks_a_text_concept_and_a_box(client31, astronaut):
    video = write_video(client31.media / "pan.mp4", moving_crops(astronaut, 6))
    assert client31.post("/track/start", json={"video_path": str(video), "session_id": "t31"}).status_code == 200
    assert client31.get("/health").json()["video_predictor_loaded"] is True
    predictor = client31.app.state.tracking.predictor
    assert predictor.model is client31.app.state.models.model and predictor.engine.multiplex
    r = client31.post("/track/prompt", json={"session_id": "t31", "frame_idx": 0, "text": "a face"})
    assert r.status_code == 200, r.text
    assert r.json()["num_objects"] > 0
    frames = _frames(client31, "t31")
    assert [f["frame_idx"] for f in frames] == list(range(6))
    assert all(f["object_ids"] for f in frames)

    for b64 in frames[-1]["masks"]:
        assert decode_mask(base64.b64decode(b64)).shape == (96, 96)
    r = client31.post("/track/prompt", json={"session_id": "t31", "frame_idx": 2, "boxes": [[0.5, 0.5, 0.4, 0.4]]})
    assert r.status_code == 200, r.text
    r = client31.post("/track/propagate", json={"session_id": "t31", "direction": "both"})
    assert r.status_code == 200 and r.json()["num_frames_processed"] == 6, r.text
    assert client31.post("/track/reset", json={"session_id": "t31"}).status_code == 200
    assert client31.post("/track/stop", json={"session_id": "t31"}).json()["closed"] is True


def test_video_tracks_five_clicked_objects(client31, astronaut):
    """Five clicked objects at the tiny preset (buckets of 4): each in a tracker state of its own, every object
    tracked on every frame, one removed, a click refined; the streamed answer equals the stored frames."""
    video = write_video(client31.media / "pan5.mp4", moving_crops(astronaut, 5))
    assert client31.post("/track/start", json={"video_path": str(video), "session_id": "c31"}).status_code == 200
    points = [[12, 12], [40, 20], [70, 30], [20, 70], [80, 80]]
    for k, point in enumerate(points, start=1):
        r = client31.post("/track/prompt", json={"session_id": "c31", "frame_idx": 0, "points": [point], "obj_id": k})
        assert r.status_code == 200, r.text
        assert k in r.json()["object_ids"]
    session = client31.app.state.tracking.sessions["c31"].video
    # as released, every clicked new object starts a tracker state of its own
    assert sorted(b.obj_ids for b in session.batches) == [[1], [2], [3], [4], [5]]
    frames = _frames(client31, "c31", mask_format="rle")
    assert [f["object_ids"] for f in frames] == [[1, 2, 3, 4, 5]] * 5
    r = client31.post("/track/remove_object", json={"session_id": "c31", "obj_id": 3})
    assert r.status_code == 200 and r.json()["removed"] is True
    r = client31.post("/track/prompt", json={"session_id": "c31", "frame_idx": 2, "points": [[40, 20], [60, 60]],
                                             "labels": [1, 0], "obj_id": 2})  # fmt: skip
    assert r.status_code == 200 and 2 in r.json()["object_ids"], r.text
    with client31.stream("POST", "/track/propagate", json={"session_id": "c31", "direction": "forward",
                                                           "stream": True, "mask_format": "rle"}) as s:  # fmt: skip
        assert s.status_code == 200
        lines = [json.loads(line) for line in s.iter_lines() if line]
    streamed = [x for x in lines if "frame_idx" in x]
    assert [f["object_ids"] for f in streamed] == [[1, 2, 4, 5]] * 5
    stored = client31.post("/track/frames", json={"session_id": "c31", "mask_format": "rle"}).json()["frames"]
    assert [f["masks"] for f in stored] == [f["masks"] for f in streamed]
    assert client31.post("/track/stop", json={"session_id": "c31"}).json()["closed"] is True


def test_a_real_uvicorn_serves_sam31(tmp_path, photo, astronaut):
    server = start_app(tmp_path, {"SAM3_MODEL_VERSION": "sam3.1"})
    try:
        assert httpx.get(f"{server.url}/health", timeout=10).json()["model_version"] == "sam3.1"
        r = httpx.post(f"{server.url}/predict/mask", files={"image": ("a.png", photo, "image/png")},
                       data={"points": "[[200, 150]]"}, timeout=120)  # fmt: skip
        assert r.status_code == 200, r.text
        assert decode_mask(r.content).shape == (300, 400)
        video = write_video(server.media_root / "pan.mp4", moving_crops(astronaut, 4))
        post = lambda path, body: httpx.post(f"{server.url}{path}", json=body, timeout=120)  # noqa: E731
        assert post("/track/start", {"video_path": str(video), "session_id": "v"}).status_code == 200
        r = post("/track/prompt", {"session_id": "v", "frame_idx": 0, "text": "a face"})
        assert r.status_code == 200 and r.json()["num_objects"] > 0, r.text
        frames = post("/track/propagate", {"session_id": "v", "direction": "forward"}).json()["frames"]
        assert [f["frame_idx"] for f in frames] == [0, 1, 2, 3] and all(f["object_ids"] for f in frames)
        assert post("/track/stop", {"session_id": "v"}).json()["closed"] is True
    finally:
        stop_server(server)


def test_a_missing_sam31_checkpoint_names_the_file_and_the_hub_repo(tmp_path):
    settings = tiny_settings(model_version="sam3.1", random_weights=False, checkpoint=str(tmp_path / "m" / "x.pt"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        error = client.get("/health").json()["error"]
    assert "SAM 3.1 checkpoint not found" in error and "facebook/sam3.1" in error and "sam3.1_multiplex.pt" in error
