"""Development mode shows something, over a real uvicorn process (``SAM3_PRESET=tiny SAM3_RANDOM_WEIGHTS=true``):
``/detect`` at the default confidence finds objects, a text prompt and a single click each track an object
through a generated video, ``/health`` says what a person sees, the start-up log names the media roots, and
``/docs`` renders in a real browser with every request outside the service blocked (the network cut)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.clients.conftest import LiveServer, start_server, stop_server
from tests.server.media import moving_crops, write_video
from tests.ui.conftest import chromium_path


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("dev"), {})  # tiny preset, random weights, default settings
    yield server
    stop_server(server)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _mask_pixels(b64png: str) -> int:
    return int((np.asarray(Image.open(io.BytesIO(base64.b64decode(b64png)))) > 0).sum())


def test_health_and_log_say_what_a_person_will_see(dev_server):
    health = httpx.get(f"{dev_server.url}/health").json()
    assert health["model_loaded"] and health["random_weights"] and health["preset"] == "tiny"
    assert "meaningless" in health["note"] and "/detect" in health["note"]
    log = dev_server.log_path.read_text(errors="replace")  # the whole log: .log() keeps only its tail
    assert f"(SAM_MEDIA_ROOTS): {dev_server.media_root.resolve()}" in log


def test_detect_at_the_default_confidence_finds_objects(dev_server, astronaut):
    response = httpx.post(
        f"{dev_server.url}/detect", files={"image": ("a.png", _png(astronaut))}, data={"text": "a person"}, timeout=120
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] >= 1 and all(o["score"] >= 0.5 for o in body["objects"])
    assert any(_mask_pixels(o["mask"]) > 0 for o in body["objects"])


@pytest.mark.parametrize("prompt", [{"text": "a person"}, {"points": [[48, 48]]}], ids=["text", "click"])
def test_a_tracked_video_yields_objects(dev_server, astronaut, prompt):
    video = write_video(dev_server.media_root / "dev.mp4", moving_crops(astronaut, 4))
    sid = "dev-" + next(iter(prompt))
    post = lambda path, body: httpx.post(f"{dev_server.url}{path}", json=body, timeout=300)  # noqa: E731
    assert post("/track/start", {"video_path": str(video), "session_id": sid}).status_code == 200
    try:
        first = post("/track/prompt", {"session_id": sid, "frame_idx": 0, **prompt})
        assert first.status_code == 200, first.text
        assert first.json()["num_objects"] >= 1
        assert any(_mask_pixels(m) > 0 for m in first.json()["masks"])
        result = post("/track/propagate", {"session_id": sid, "direction": "forward", "start_frame": 0})
        assert result.status_code == 200, result.text
        frames = result.json()["frames"]
        assert [f["frame_idx"] for f in frames] == [0, 1, 2, 3]
        tracked = [f for f in frames if any(_mask_pixels(m) > 0 for m in f["masks"])]
        assert len(tracked) >= 3, [f["object_ids"] for f in frames]
    finally:
        post("/track/stop", {"session_id": sid})


def test_docs_render_with_the_network_cut(dev_server):
    from playwright.sync_api import sync_playwright

    outside: list[str] = []

    def only_the_service(route) -> None:
        if route.request.url.startswith(dev_server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("**/*", only_the_service)
            page.goto(f"{dev_server.url}/docs")
            page.wait_for_selector("#operations-image-detect_detect_post", timeout=60_000)
            assert page.locator(".opblock").count() >= 8  # every endpoint of the contract is listed
        finally:
            browser.close()
    assert outside == []
