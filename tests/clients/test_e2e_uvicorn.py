"""End to end: the real clients and raw httpx against ``uvicorn server.main:app`` in a subprocess."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from milimo_clients import InpaintingManager, SamServiceError, TrackingManager
from tests.server.media import decode_mask, encode, moving_crops, never_seen, write_video


@pytest.fixture(scope="module")
def coffee_path(tmp_path_factory, coffee):
    path = tmp_path_factory.mktemp("img") / "coffee.jpg"
    Image.fromarray(coffee).save(path, quality=90)
    return path


def test_health(live_server):
    body = httpx.get(f"{live_server.url}/health").json()
    assert body["status"] == "running" and body["model_loaded"] and body["device"] == "cpu"
    assert body["error"] is None and body["random_weights"] is True


def test_inpainting_manager_click_mask(live_server, coffee_path, tmp_path, monkeypatch):
    with InpaintingManager(live_server.url) as sam:
        out = sam.get_mask_from_sam(coffee_path, [[300, 200]], output_path=tmp_path / "m" / "mask.png")
        assert out == str(tmp_path / "m" / "mask.png")
        mask = decode_mask(open(out, "rb").read())
        assert mask.shape == (400, 600) and set(np.unique(mask)) <= {0, 255}
    # No output path: the documented folder (SAM_OUTPUT_DIR, default ./sam_masks), one file per request.
    monkeypatch.setenv("SAM_OUTPUT_DIR", str(tmp_path / "masks"))
    with InpaintingManager(live_server.url) as sam:
        request = dict(labels=[1, 0], box=[0.5, 0.5, 0.5, 0.5])
        other = sam.get_mask_from_sam(coffee_path, [[300, 200], [10, 10]], **request)
        again = sam.get_mask_from_sam(coffee_path, [[300, 200], [10, 10]], **request)
        assert other == again and other.startswith(str(tmp_path / "masks" / "coffee_mask_"))
        assert decode_mask(open(other, "rb").read()).shape == (400, 600)
        assert len(list((tmp_path / "masks").iterdir())) == 1


def test_inpainting_manager_text_mask_and_detection(live_server, coffee_path, tmp_path):
    with InpaintingManager(live_server.url) as sam:
        result = sam.detect_objects(coffee_path, "a cup", confidence=0.0)
        assert result.count == len(result.objects) > 0 and (result.width, result.height) == (600, 400)
        assert [o.score for o in result.objects] == sorted((o.score for o in result.objects), reverse=True)
        assert result.objects[0].mask_array().shape == (400, 600) and result.objects[0].label == "a cup"
        path = sam.get_mask_from_text(coffee_path, "a cup", confidence=1.0, output_path=tmp_path / "t.png")
        assert decode_mask(open(path, "rb").read()).max() == 0  # nothing scores above 1


def test_client_gets_the_services_400_message(live_server, coffee_path):
    with InpaintingManager(live_server.url) as sam:
        with pytest.raises(SamServiceError) as err:
            sam.get_mask_from_sam(coffee_path, [[5000, 10]])
    assert err.value.status_code == 400 and str(err.value).startswith("points[0]:")


def test_raw_multipart_multimask(live_server, coffee):
    response = httpx.post(
        f"{live_server.url}/predict/mask",
        files={"image": ("c.png", encode(coffee), "image/png")},
        data={"points": json.dumps([[300, 200]]), "multimask": "true"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["masks"]) == 3 and body["scores"] == sorted(body["scores"], reverse=True)
    assert decode_mask(base64.b64decode(body["masks"][0])).shape == (400, 600)


def test_16_concurrent_requests_share_one_backbone_run(live_server, astronaut):
    image = encode(never_seen(astronaut), "PNG")

    async def burst():
        async with httpx.AsyncClient(base_url=live_server.url, timeout=300) as client:
            before = (await client.get("/health")).json()["backbone_runs"]
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/predict/mask",
                        files={"image": ("a.png", image, "image/png")},
                        data={"points": json.dumps([[16 * i + 8, 30 * i + 8]])},
                    )
                    for i in range(16)
                )
            )
            after = (await client.get("/health")).json()["backbone_runs"]
            return before, responses, after

    before, responses, after = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 16
    assert after - before == 1


def test_oversized_upload_is_refused_with_413(live_server):
    body = b"\x89PNG\r\n\x1a\n" + bytes(26 * 1024 * 1024)  # over the default 25 MB
    response = httpx.post(
        f"{live_server.url}/predict/mask", files={"image": ("big.png", body, "image/png")}, data={"points": "[[1, 1]]"}
    )
    assert response.status_code == 413 and "image" in response.json()["detail"]
    assert httpx.get(f"{live_server.url}/health").status_code == 200


def test_tracking_manager_session(live_server, astronaut, tmp_path):
    video = write_video(live_server.media_root / "pan.mp4", moving_crops(astronaut, 5))
    with TrackingManager(live_server.url) as tracker:
        session = tracker.start_session(video, session_id="e2e")
        assert (session.num_frames, session.width, session.height) == (5, 96, 96)
        frame = tracker.add_prompt("e2e", 0, points=[[48, 40]])
        assert frame.frame_idx == 0
        result = tracker.propagate("e2e", direction="forward", start_frame=0)
        assert result.num_frames_processed == len(result.frames) == 5
        manifest = tracker.save_results("e2e", result.frames, tmp_path / "export")
        assert json.load(open(manifest))["session_id"] == "e2e"
        assert tracker.stop_session("e2e") is True
        assert tracker.stop_session("e2e") is False
