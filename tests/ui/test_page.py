"""The page at /ui in headless Chromium against a real service: image clicks and text, video end to end.

Screenshots go to each test's tmp folder (``pytest --basetemp=...`` keeps them somewhere known).
"""

from __future__ import annotations

import base64
import io
import json
import re
import time

import httpx
import numpy as np
from PIL import Image

from tests.clients.conftest import start_server, stop_server
from tests.ui.conftest import LONG_FRAMES, VIDEO_FRAMES, open_video, visible_box

# Tinted pixels on a stage's mask layer (the layer holds nothing but masks).
MASK_PIXELS = """(stage) => {
  const canvas = document.querySelector(`#${stage} .layer-mask`);
  if (!canvas.width) return 0;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i]) n++;
  return n;
}"""
# Non-black pixels on a stage's picture layer.
PICTURE_PIXELS = MASK_PIXELS.replace(".layer-mask", ".layer-image").replace(
    "if (data[i])", "if (data[i - 1] + data[i - 2] + data[i - 3])"
)


def set_range(page, selector: str, value: float) -> None:
    page.eval_on_selector(
        selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }", str(value)
    )


def test_root_redirects_to_the_page_which_shows_the_model_state(page, ui_server):
    page.goto(ui_server.url + "/")
    assert page.url == ui_server.url + "/ui"
    badge = page.locator("#health")
    badge.filter(has_text="model loaded").wait_for()
    assert "RANDOM WEIGHTS" in badge.inner_text() and "cpu" in badge.inner_text()
    assert page.locator("#dev-banner").is_visible()
    assert page.title() == "SAM 3 service"


def test_image_clicks_text_and_download(page, ui_server, coffee, tmp_path):
    photo = tmp_path / "coffee.jpg"
    Image.fromarray(coffee).save(photo, quality=92)
    page.goto(ui_server.url + "/ui")
    page.set_input_files("#image-file", str(photo))
    marks = page.locator("#image-stage .layer-marks")
    marks.wait_for()
    assert page.evaluate(PICTURE_PIXELS, "image-stage") > 0.9 * coffee.shape[0] * coffee.shape[1]
    assert page.evaluate(MASK_PIXELS, "image-stage") == 0

    # A positive click: a mask appears on the overlay, with its score.
    box = visible_box(marks)
    marks.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.45})
    page.locator("#click-info", has_text="score").wait_for()
    first = page.evaluate(MASK_PIXELS, "image-stage")
    assert first > 0
    # A negative (shift) click refines the same object: the service feeds its previous mask back in.
    with page.expect_response("**/predict/mask") as answer:
        marks.click(position={"x": box["width"] * 0.2, "y": box["height"] * 0.2}, modifiers=["Shift"])
    assert answer.value.ok and answer.value.headers["x-refined"] == "true"
    page.locator("#click-info", has_text="(refined)").wait_for()
    page.screenshot(path=tmp_path / "image_clicks.png")

    # Keep the clicked object, then detect by text at a low confidence (random weights score ~0.33).
    page.click("#new-object")
    set_range(page, "#confidence", 0.05)
    assert page.inner_text("#confidence-value") == "0.05"
    page.fill("#text-input", "cup")
    page.press("#text-input", "Enter")
    page.wait_for_function("document.querySelectorAll('#object-list li').length > 1")
    items = page.locator("#object-list li")
    labels = items.locator(".label").all_inner_texts()
    assert labels[0].startswith("click") and set(labels[1:]) == {"cup"}
    scores = [float(s) for s in items.locator(".score").all_inner_texts()]
    assert all(0.05 <= s <= 1 for s in scores[1:]) and scores[1:] == sorted(scores[1:], reverse=True)
    all_selected = page.evaluate(MASK_PIXELS, "image-stage")
    page.screenshot(path=tmp_path / "image_text.png")

    # Deselect everything: the overlay empties; select the click and the best detection again.
    assert all_selected > 0
    count = items.count()
    for i in range(count):
        items.nth(i).click()
    assert page.inner_text("#object-count") == f"0 of {count} selected"
    assert page.evaluate(MASK_PIXELS, "image-stage") == 0
    items.nth(0).click()
    items.nth(1).click()
    assert page.inner_text("#object-count") == f"2 of {count} selected"
    assert page.evaluate(MASK_PIXELS, "image-stage") > 0
    page.screenshot(path=tmp_path / "image_selection.png")

    # "Download mask": a black-and-white PNG of the image's size, the union of the two selected masks.
    with page.expect_download() as download:
        page.click("#download-mask")
    saved = tmp_path / "mask.png"
    download.value.save_as(saved)
    mask = np.asarray(Image.open(saved).convert("L"))
    assert mask.shape == coffee.shape[:2]
    assert set(np.unique(mask)) <= {0, 255}
    assert (mask == 255).sum() == page.evaluate(MASK_PIXELS, "image-stage")  # exactly what the overlay shows

    # Several prompts, comma-separated, go as `texts`.
    page.fill("#text-input", "cup, spoon")
    with page.expect_response("**/detect") as answer:
        page.press("#text-input", "Enter")
    assert answer.value.ok, answer.value.text()
    assert answer.value.request.post_data_buffer.count(b'name="texts"') == 1
    labels = {o["label"] for o in answer.value.json()["objects"]}
    page.wait_for_function(
        f"document.querySelectorAll('#object-list li').length === {1 + len(answer.value.json()['objects'])}"
    )
    assert set(items.locator(".label").all_inner_texts()[1:]) == labels <= {"cup", "spoon"} and labels


def test_service_errors_show_as_toasts_and_the_page_keeps_working(page, ui_server, astronaut, tmp_path):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(photo)
    page.goto(ui_server.url + "/ui")
    page.set_input_files("#image-file", str(photo))
    page.locator("#image-stage .layer-marks").wait_for()  # shown once the image is decoded
    page.fill("#text-input", "   ")
    page.press("#text-input", "Enter")
    toast = page.locator(".toast", has_text="/detect: text:")
    toast.wait_for()
    assert toast.inner_text().startswith("422 ")
    page.screenshot(path=tmp_path / "toast.png")
    # The same page still segments afterwards: a dragged box this time.
    box = visible_box(page.locator("#image-stage .layer-marks"))
    # (no click was made, so the service's 200 means the box went: it needs points or boxes)
    with page.expect_response("**/predict/mask") as answer:
        page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.2 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.4 * box["height"], steps=5)
        page.mouse.move(box["x"] + 0.7 * box["width"], box["y"] + 0.6 * box["height"], steps=5)
        page.mouse.up()
    assert answer.value.ok, answer.value.text()
    page.locator("#click-info", has_text="score").wait_for()
    assert page.evaluate(MASK_PIXELS, "image-stage") > 0


def any_mask(masks_b64: list[str]) -> bool:
    return any(np.asarray(Image.open(io.BytesIO(base64.b64decode(m)))).any() for m in masks_b64)


def expect_overlay(page, drawn: bool) -> None:
    """Wait until the video stage's mask layer shows something (``drawn``) or nothing."""
    page.wait_for_function(f"(s) => ({MASK_PIXELS})(s) {'>' if drawn else '==='} 0", arg="video-stage")


def propagated_frames(response) -> list[dict]:
    """The frame objects of a /track/propagate answer, streamed (NDJSON) or plain JSON."""
    if "ndjson" in response.headers.get("content-type", ""):
        events = [json.loads(line) for line in response.text().splitlines() if line.strip()]
        assert events[0]["event"] == "start" and events[-1] == {**events[-1], "event": "end", "cancelled": False}
        return sorted((e for e in events if e["event"] == "frame"), key=lambda f: f["frame_idx"])
    return response.json()["frames"]


def test_video_end_to_end(page, ui_server, tmp_path):
    page.goto(ui_server.url + "/ui")
    page.click("nav .tab[data-mode=video]")
    options = page.locator("#video-select option")
    page.wait_for_function("document.querySelectorAll('#video-select option').length >= 2")
    assert sorted(options.all_inner_texts()) == ["clip.mp4", "long.mp4", "shots/ (frames)"]
    page.select_option("#video-select", label="clip.mp4")
    page.click("#video-open")
    page.locator("#video-info", has_text=f"{VIDEO_FRAMES} frames").wait_for()
    page.wait_for_function(f"document.getElementById('frame-label').textContent === '1 / {VIDEO_FRAMES}'")
    page.wait_for_function("(s) => (" + PICTURE_PIXELS + ")(s) > 0", arg="video-stage")

    # Scrub: another frame of the video comes from /media/frame.
    set_range(page, "#frame-slider", 3)
    page.wait_for_function(f"document.getElementById('frame-label').textContent === '4 / {VIDEO_FRAMES}'")
    set_range(page, "#frame-slider", 0)
    page.wait_for_function(f"document.getElementById('frame-label').textContent === '1 / {VIDEO_FRAMES}'")

    # A click on frame 0 makes object 1; the overlay shows exactly whether the service found a mask there
    # (random weights may track nothing: the page must then draw nothing, not something stale).
    marks = page.locator("#video-stage .layer-marks")
    box = visible_box(marks)
    with page.expect_response("**/track/prompt") as answer:
        marks.click(position={"x": box["width"] / 2, "y": box["height"] / 2})
    assert answer.value.ok
    clicked = answer.value.json()
    page.locator("#video-objects li", has_text="object 1").wait_for()
    expect_overlay(page, any_mask(clicked["masks"]))

    # Propagate forward to the end: the progress bar reaches 100%, every frame has a result.
    page.select_option("#direction", "forward")
    with page.expect_response(lambda r: r.url.endswith("/track/propagate") and r.ok) as answer:
        page.click("#propagate")
    page.locator("#progress-text", has_text="100%").wait_for(timeout=180_000)
    page.wait_for_function("!document.getElementById('propagate').disabled")
    assert page.eval_on_selector("#progress", "p => p.value === p.max")
    assert f"{VIDEO_FRAMES} / {VIDEO_FRAMES} frames" in page.inner_text("#progress-text")
    frames = propagated_frames(answer.value)
    assert [f["frame_idx"] for f in frames] == list(range(VIDEO_FRAMES))

    # Scrub to the last frame: the tracked object's mask (if any) is drawn there.
    set_range(page, "#frame-slider", VIDEO_FRAMES - 1)
    page.wait_for_function(f"document.getElementById('frame-label').textContent === '{VIDEO_FRAMES} / {VIDEO_FRAMES}'")
    expect_overlay(page, any_mask(frames[-1]["masks"]))
    page.screenshot(path=tmp_path / "video_tracked.png")

    # Play runs through to the end.
    set_range(page, "#frame-slider", 0)
    page.click("#play")
    page.wait_for_function(f"document.getElementById('frame-label').textContent === '{VIDEO_FRAMES} / {VIDEO_FRAMES}'")
    page.locator("#play", has_text="Play").wait_for()

    # Remove the object: gone from the list and from the overlay.
    with page.expect_response("**/track/remove_object") as removed:
        page.click("#video-objects li .remove")
    assert removed.value.ok, removed.value.text()
    page.wait_for_function("document.querySelectorAll('#video-objects li').length === 0")
    expect_overlay(page, False)

    # A text prompt on this frame: a new concept, the list shows exactly the objects the service found.
    page.fill("#video-text", "a face")
    with page.expect_response("**/track/prompt") as answer:
        page.press("#video-text", "Enter")
    assert answer.value.ok, answer.value.text()
    found = answer.value.json()
    names = [f"object {i}" for i in sorted(found["object_ids"])]
    page.wait_for_function(f"document.querySelectorAll('#video-objects li').length === {len(names)}")
    assert page.locator("#video-objects li .label").all_inner_texts() == names
    expect_overlay(page, any_mask(found["masks"]))
    page.screenshot(path=tmp_path / "video_text.png")

    # Closing the page stops the session.
    session = page.inner_text("#video-info").rsplit("session ", 1)[1]
    assert httpx.get(ui_server.url + "/health").json()["active_sessions"] == 1
    page.close(run_before_unload=True)
    deadline = time.monotonic() + 10
    while httpx.get(ui_server.url + "/health").json()["active_sessions"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(ui_server.url + "/health").json()["active_sessions"] == 0
    assert httpx.post(ui_server.url + "/track/stop", json={"session_id": session}).json()["closed"] is False


def test_video_propagation_can_be_cancelled(page, ui_server):
    page.goto(ui_server.url + "/ui")
    open_video(page, "long.mp4", LONG_FRAMES)
    marks = page.locator("#video-stage .layer-marks")
    with page.expect_response("**/track/prompt"):
        marks.click(position={"x": 20, "y": 20})
    page.select_option("#direction", "forward")
    page.click("#propagate")
    page.locator("#cancel:enabled").wait_for()
    page.click("#cancel")
    page.locator(".toast.info", has_text=re.compile(r"Cancelled after \d+ frames|Propagation stopped")).wait_for()
    page.locator("#propagate:enabled").wait_for()
    assert page.locator("#cancel").is_disabled()
    assert "100%" not in page.inner_text("#progress-text")


def test_frame_endpoint_serves_jpeg_for_the_page(ui_server):
    clip = str(ui_server.media_root / "clip.mp4")
    answer = httpx.get(ui_server.url + "/media/frame", params={"video_path": clip, "frame_idx": 2})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(answer.content)).size == (160, 160)


def test_page_without_a_model_says_why_and_shows_503s(browser, tmp_path, astronaut):
    server = start_server(tmp_path, {"SAM3_RANDOM_WEIGHTS": "false", "SAM3_CHECKPOINT": str(tmp_path / "none.pt")})
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        error = httpx.get(server.url + "/health").json()["error"]
        assert error
        page = context.new_page()
        page.goto(server.url + "/ui")
        page.locator("#health.bad", has_text="model not loaded").wait_for()
        assert page.inner_text("#error-banner") == f"Model not loaded: {error}"
        assert page.locator("#dev-banner").is_hidden()
        photo = tmp_path / "astronaut.jpg"
        Image.fromarray(astronaut).save(photo)
        page.set_input_files("#image-file", str(photo))
        page.locator("#image-stage .layer-marks").click(position={"x": 50, "y": 50})
        page.locator(".toast", has_text="503 /predict/mask: model not loaded").wait_for()
        assert page.inner_text("#click-info") == "No clicks yet."  # the failed click is not kept
        page.screenshot(path=tmp_path / "no_model.png")
    finally:
        context.close()
        stop_server(server)
