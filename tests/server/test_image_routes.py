"""The image endpoints on the real tiny model: response shapes, formats and headers of the contract."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from tests.server.media import decode_mask, encode


@pytest.fixture(scope="module")
def coffee_jpeg(coffee) -> bytes:
    return encode(coffee, "JPEG", quality=90)  # 400 x 600, not square


def test_health_reports_the_contract_fields(client):
    body = client.get("/health").json()
    assert body["status"] == "running"
    assert body["model_loaded"] is True and body["processor_ready"] is True
    assert body["device"] in ("cuda", "mps", "cpu")
    assert body["error"] is None
    assert body["random_weights"] is True and body["preset"] == "tiny"
    assert isinstance(body["backbone_runs"], int)


def test_the_video_predictor_is_built_on_the_first_session(media_root, astronaut):
    """/health says whether the video predictor exists: not at start, built by the first /track/start."""
    from fastapi.testclient import TestClient

    from server.main import create_app
    from tests.server.conftest import tiny_settings
    from tests.server.media import moving_crops, write_video

    video = write_video(media_root / "first_session.mp4", moving_crops(astronaut, 3))
    with TestClient(create_app(tiny_settings(media_roots=str(media_root)))) as fresh:
        assert fresh.get("/health").json()["video_predictor_loaded"] is False
        started = fresh.post("/track/start", json={"video_path": str(video)})
        assert started.status_code == 200, started.text
        assert fresh.get("/health").json()["video_predictor_loaded"] is True


def test_click_returns_one_png_mask_at_image_size(client, coffee_jpeg):
    response = client.post(
        "/predict/mask",
        files={"image": ("coffee.jpg", coffee_jpeg, "image/jpeg")},
        data={"points": "[[300, 200], [100, 50]]", "labels": "[1, 0]"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    score = float(response.headers["x-mask-score"])
    assert np.isfinite(score)
    mask = decode_mask(response.content)
    assert mask.shape == (400, 600)
    assert set(np.unique(mask)) <= {0, 255}


def test_multimask_returns_three_candidates_best_first(client, coffee_jpeg):
    response = client.post(
        "/predict/mask",
        files={"image": ("coffee.jpg", coffee_jpeg, "image/jpeg")},
        data={"points": "[[300, 200]]", "multimask": "true"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["masks"]) == len(body["scores"]) == 3
    assert body["scores"] == sorted(body["scores"], reverse=True)
    for b64 in body["masks"]:
        assert decode_mask(base64.b64decode(b64)).shape == (400, 600)


@pytest.mark.parametrize(
    "fields",
    [
        {"boxes": "[0.5, 0.5, 0.4, 0.6]"},  # box only
        {"boxes": "[[0.5, 0.5, 0.4, 0.6]]"},  # a list with one box
        {"boxes": "[0.5, 0.5, 0.4, 0.6]", "points": "[[300, 200]]", "labels": "[1]"},
    ],
)
def test_box_prompts(client, coffee_jpeg, fields):
    response = client.post("/predict/mask", files={"image": ("c.jpg", coffee_jpeg, "image/jpeg")}, data=fields)
    assert response.status_code == 200, response.text
    assert decode_mask(response.content).shape == (400, 600)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_pixel_modes_are_accepted(client, astronaut, mode):
    from PIL import Image

    image = Image.fromarray(astronaut[:200, :300]).convert(mode)
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    response = client.post(
        "/predict/mask", files={"image": ("a.png", buffer.getvalue(), "image/png")}, data={"points": "[[150, 100]]"}
    )
    assert response.status_code == 200, response.text
    assert decode_mask(response.content).shape == (200, 300)


def test_detect_returns_sorted_objects_with_masks_and_boxes(client, coffee_jpeg):
    # Random weights: a threshold of 0 keeps every query, so the object encoding is exercised.
    response = client.post(
        "/detect", files={"image": ("c.jpg", coffee_jpeg, "image/jpeg")}, data={"text": "a cup", "confidence": "0"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (600, 400)
    assert body["count"] == len(body["objects"]) > 0
    scores = [o["score"] for o in body["objects"]]
    assert scores == sorted(scores, reverse=True)
    for obj in body["objects"][:5]:
        assert obj["label"] == "a cup"
        x0, y0, x1, y1 = obj["bbox"]
        assert 0 <= x0 <= x1 <= 600 and 0 <= y0 <= y1 <= 400
        assert decode_mask(base64.b64decode(obj["mask"])).shape == (400, 600)


def test_detect_with_no_match_is_an_empty_list(client, coffee_jpeg):
    response = client.post(
        "/detect", files={"image": ("c.jpg", coffee_jpeg, "image/jpeg")}, data={"text": "a cup", "confidence": "1"}
    )
    assert response.status_code == 200
    assert response.json()["objects"] == [] and response.json()["count"] == 0


def test_segment_text_is_the_union_of_the_detected_masks(client, coffee_jpeg):
    files = {"image": ("c.jpg", coffee_jpeg, "image/jpeg")}
    data = {"text": "coffee", "confidence": "0.3"}
    detected = client.post("/detect", files=files, data=data).json()
    response = client.post("/segment/text", files=files, data=data)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert int(response.headers["x-object-count"]) == detected["count"]
    union = np.zeros((400, 600), bool)
    for obj in detected["objects"]:
        union |= decode_mask(base64.b64decode(obj["mask"])) > 0
    np.testing.assert_array_equal(decode_mask(response.content) > 0, union)


def test_segment_text_with_no_match_is_an_empty_mask(client, coffee_jpeg):
    response = client.post(
        "/segment/text", files={"image": ("c.jpg", coffee_jpeg, "image/jpeg")}, data={"text": "x", "confidence": "1"}
    )
    assert response.status_code == 200
    assert response.headers["x-object-count"] == "0"
    assert decode_mask(response.content).max() == 0


def test_same_image_reuses_the_backbone(client, astronaut):
    image = encode(astronaut[50:250, 60:300], "PNG")  # not used by any other test
    before = client.get("/health").json()["backbone_runs"]
    for points in ([[10, 10]], [[100, 80]], [[200, 150]]):
        r = client.post(
            "/predict/mask", files={"image": ("a.png", image, "image/png")}, data={"points": json.dumps(points)}
        )
        assert r.status_code == 200
    r = client.post("/detect", files={"image": ("a.png", image, "image/png")}, data={"text": "face"})
    assert r.status_code == 200
    assert client.get("/health").json()["backbone_runs"] == before + 1


def test_cors_exposes_the_score_headers(client, coffee_jpeg):
    response = client.post(
        "/predict/mask",
        files={"image": ("c.jpg", coffee_jpeg, "image/jpeg")},
        data={"points": "[[300, 200]]"},
        headers={"Origin": "http://localhost:5173"},
    )
    assert response.headers["access-control-allow-origin"] in ("*", "http://localhost:5173")
    assert "x-mask-score" in response.headers["access-control-expose-headers"].lower()
