"""The page's "Everything" button in headless Chromium against a real service (tiny preset, random weights):
in image mode, every region is shown, hovering one highlights it and clicking it makes it an object; on a video
frame, the picked region becomes a tracked object (/track/prompt with the region's click), then propagates."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from tests.ui.conftest import VIDEO_FRAMES, open_video, visible_box

# Highlighted (hover colour #facc15) pixels on the Everything layer of a stage.
HOVERED_PIXELS = """(stage) => {
  const canvas = document.querySelector(`#${stage} .layer-everything`);
  if (!canvas) return -1;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] > 200 && data[i + 1] > 150 && data[i + 2] < 120 && data[i + 3] > 120) n++;
  return n;
}"""


def inside(answer: dict, index: int, width: float, height: float) -> dict:
    """Screen position (within a layer of ``width`` x ``height``) of a pixel of region ``index`` of the answer."""
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["objects"][index]["mask"])))) > 0
    ys, xs = np.nonzero(mask)
    y, x = ys[len(ys) // 2], xs[len(ys) // 2]  # the middle set pixel in scan order
    return {"x": (x + 0.5) * width / mask.shape[1], "y": (y + 0.5) * height / mask.shape[0]}


def test_everything_in_image_mode(page, ui_server, coffee, tmp_path):
    photo = tmp_path / "coffee.png"
    Image.fromarray(coffee).save(photo)
    page.goto(ui_server.url + "/ui")
    page.set_input_files("#image-file", str(photo))
    page.locator("#image-stage .layer-marks").wait_for()
    with page.expect_response("**/segment/everything") as answer:
        page.click("#everything")
    assert answer.value.ok, answer.value.text()
    body = answer.value.json()
    assert body["count"] >= 1 and (body["width"], body["height"]) == (600, 400)
    layer = page.locator("#image-stage .layer-everything")
    layer.wait_for()
    assert layer.get_attribute("data-regions") == str(body["count"])
    assert page.evaluate(HOVERED_PIXELS, "image-stage") == 0

    # Hover a pixel of the smallest region: the smallest region there lights up (exactly its pixels).
    box = visible_box(layer)
    at = inside(body, body["count"] - 1, box["width"], box["height"])
    page.mouse.move(box["x"] + at["x"], box["y"] + at["y"])
    page.wait_for_function("document.querySelector('#image-stage .layer-everything').dataset.hovered !== ''")
    hovered = int(layer.get_attribute("data-hovered"))
    lit = page.evaluate(HOVERED_PIXELS, "image-stage")
    assert lit == body["objects"][hovered]["area"] > 0
    page.screenshot(path=tmp_path / "everything_hover.png")

    # Click it: the layer goes, the region is an object in the list with its predicted IoU.
    page.mouse.click(box["x"] + at["x"], box["y"] + at["y"])
    layer.wait_for(state="detached")
    item = page.locator("#object-list li").first
    assert item.locator(".label").inner_text() == f"region {hovered + 1}"
    assert float(item.locator(".score").inner_text()) == round(body["objects"][hovered]["predicted_iou"], 3)
    assert page.inner_text("#object-count") == "1 of 1 selected"
    page.screenshot(path=tmp_path / "everything_picked.png")


def test_everything_on_a_video_frame_makes_a_tracked_object(page, ui_server, tmp_path):
    page.goto(ui_server.url + "/ui")
    open_video(page, "clip.mp4", VIDEO_FRAMES)
    page.wait_for_function(f"document.getElementById('frame-label').textContent === '1 / {VIDEO_FRAMES}'")

    with page.expect_response("**/segment/everything") as answer:
        page.click("#video-everything")
    assert answer.value.ok, answer.value.text()
    body = answer.value.json()
    layer = page.locator("#video-stage .layer-everything")
    layer.wait_for()
    box = visible_box(layer)
    at = inside(body, 0, box["width"], box["height"])
    page.mouse.move(box["x"] + at["x"], box["y"] + at["y"])
    page.wait_for_function("document.querySelector('#video-stage .layer-everything').dataset.hovered !== ''")
    hovered = int(layer.get_attribute("data-hovered"))
    with page.expect_request("**/track/prompt") as sent, page.expect_response("**/track/prompt") as prompted:
        page.mouse.click(box["x"] + at["x"], box["y"] + at["y"])
    request = sent.value.post_data_json
    x, y = body["objects"][hovered]["point_coords"][0]
    assert request["points"] == [[round(x), round(y)]] and request["labels"] == [1] and request["obj_id"] == 1
    assert prompted.value.ok, prompted.value.text()
    page.locator("#video-objects li", has_text="object 1").wait_for()

    # The picked object propagates like a clicked one.
    page.select_option("#direction", "forward")
    page.click("#propagate")
    page.locator("#progress-text", has_text="100%").wait_for(timeout=180_000)
    assert f"{VIDEO_FRAMES} / {VIDEO_FRAMES} frames" in page.inner_text("#progress-text")
    page.screenshot(path=tmp_path / "everything_tracked.png")
