"""The page as an editor's tool (issue 23), in Debian's Chromium against a real uvicorn process (tiny preset,
dev-mode random weights): upload, two objects, undo, propagate, cancel, resume, stale frames on the timeline,
hide and opacity, export in three formats, sessions kept alive by a heartbeat and listed, a tab closed without
a clean unload, image mode's editing basics, and /redoc without a single external request.

Screenshots go to each test's tmp folder only (never committed).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.ui.conftest import visible_box
from PIL import Image

from tests.clients.conftest import LiveServer, start_server, stop_server
from tests.server.media import write_video
from tests.server.test_editor_routes import frames_zip, truck_frames
from tests.ui.test_page import MASK_PIXELS, set_range

HEARTBEAT_S = 4
CLIP_FRAMES = 24


@pytest.fixture(scope="module")
def editor_server(tmp_path_factory, astronaut) -> Iterator[LiveServer]:
    server = start_server(
        tmp_path_factory.mktemp("editor_ui"),
        {
            "SAM_SESSION_HEARTBEAT_S": str(HEARTBEAT_S),
            "SAM_MAX_SESSIONS": "3",
            "SAM3_PRECISION": "fp32",
            "SAM_UPLOAD_RETENTION_S": "600",
        },
    )
    shots = server.media_root / "shots"
    shots.mkdir()
    for i, frame in enumerate(truck_frames(astronaut, 3)):
        Image.fromarray(frame).save(shots / f"{i}.jpg")
    yield server
    stop_server(server)


@pytest.fixture()
def context(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    yield context
    context.close()


def new_page(context, server, errors: list[str]):
    page = context.new_page()
    page.set_default_timeout(180_000)  # the tiny model on a busy shared CPU
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/ui")
    page.click("nav .tab[data-mode=video]")
    return page


def sessions(server) -> dict[str, dict]:
    return {s["session_id"]: s for s in httpx.get(server.url + "/track/sessions").json()["sessions"]}


def close_without_beacon(page) -> None:
    """The tab goes away without a clean unload: its stop beacon never reaches the service (a killed browser,
    a lost connection), and its heartbeat stops with it."""
    page.evaluate("navigator.sendBeacon = () => true")
    page.close(run_before_unload=True)


def own_session(page) -> str:
    return page.inner_text("#video-info").rsplit("session ", 1)[1]


def timeline_colours(page) -> dict[str, int]:
    """Columns of the timeline strip painted green (computed), amber (stale) or grey (not computed)."""
    return page.evaluate(
        """() => {
      const c = document.getElementById('timeline');
      const d = c.getContext('2d').getImageData(0, 1, c.width, 1).data;
      const n = {green: 0, amber: 0, grey: 0};
      for (let i = 0; i < d.length; i += 4) {
        if (d[i] === 0x16 && d[i + 1] === 0xa3) n.green++;
        else if (d[i] === 0xf5 && d[i + 1] === 0x9e) n.amber++;
        else if (d[i] === 0xd1) n.grey++;
      }
      return n;
    }"""
    )


def click_stage(page, fx: float, fy: float, **kwargs) -> dict:
    marks = page.locator("#video-stage .layer-marks")
    box = visible_box(marks)
    with page.expect_request("**/track/prompt") as sent, page.expect_response("**/track/prompt") as answer:
        marks.click(position={"x": box["width"] * fx, "y": box["height"] * fy}, **kwargs)
    assert answer.value.ok, answer.value.text()
    return json.loads(sent.value.post_data)


def download(page, button: str, tmp_path):
    with page.expect_download() as saved:
        page.click(button)
    path = tmp_path / saved.value.suggested_filename
    saved.value.save_as(path)
    return path


def test_editor_walkthrough(context, editor_server, astronaut, tmp_path):
    """Upload a clip, prompt two objects, undo, propagate, cancel, resume, mark stale frames, hide, export all
    three formats, close the tab without a clean unload and continue its session in another tab, then close
    that one and reopen the uploaded clip in a third."""
    errors: list[str] = []
    server = editor_server
    page = new_page(context, server, errors)
    clip = tmp_path / "my clip.mp4"
    write_video(clip, [np.ascontiguousarray(astronaut[100:196, 100 + 4 * i : 196 + 4 * i]) for i in range(CLIP_FRAMES)])

    # Upload: stored under the media roots, listed, opened.
    with page.expect_response("**/media/upload") as answer:
        page.set_input_files("#video-upload", str(clip))
    uploaded = answer.value.json()
    assert answer.value.ok and uploaded["num_frames"] == CLIP_FRAMES and "/sam_uploads/" in uploaded["video_path"]
    page.locator("#video-info", has_text=f"{CLIP_FRAMES} frames").wait_for()
    assert page.eval_on_selector("#video-select", "s => s.value") == uploaded["video_path"]
    page.locator("#session-list li.own", has_text="this page").wait_for()
    sid = own_session(page)
    assert sessions(server)[sid]["heartbeat"] is True  # the page keeps it alive

    # Two objects by clicks; a third click on object 2 is undone (Ctrl+Z sends object 2's first click again).
    assert click_stage(page, 0.3, 0.3)["obj_id"] == 1
    page.click("#video-new-object")
    assert click_stage(page, 0.7, 0.7)["obj_id"] == 2
    assert len(click_stage(page, 0.6, 0.8)["points"]) == 2
    with page.expect_request("**/track/prompt") as sent:
        page.keyboard.press("Control+z")
    assert json.loads(sent.value.post_data)["points"] == [[round(0.7 * 95), round(0.7 * 95)]] or (
        len(json.loads(sent.value.post_data)["points"]) == 1
    )
    page.wait_for_function("document.querySelectorAll('#video-objects li').length === 2")

    # Propagate forward, cancel after the first frames, then resume from where it stopped.
    page.select_option("#direction", "forward")
    page.click("#propagate")
    page.wait_for_function("/^[1-9]\\d* \\/ /.test(document.getElementById('progress-text').textContent)")
    page.click("#cancel")
    page.locator(".toast.info", has_text="Cancelled after").wait_for()
    page.locator("#propagate:enabled").wait_for()
    computed = sessions(server)[sid]["frames_computed"]
    assert 0 < computed < CLIP_FRAMES
    assert "100%" not in page.inner_text("#progress-text")
    colours = timeline_colours(page)
    assert colours["green"] > 0 and colours["grey"] > 0  # the strip shows what is computed and what is not
    page.screenshot(path=tmp_path / "cancelled.png")

    with page.expect_request("**/track/propagate") as sent:
        page.keyboard.press("p")  # the shortcut; starts at the frame on screen (the last one computed)
    assert json.loads(sent.value.post_data)["start_frame"] > 0
    page.locator("#progress-text", has_text="100%").wait_for(timeout=300_000)
    page.locator("#propagate:enabled").wait_for()
    assert sessions(server)[sid]["frames_computed"] == CLIP_FRAMES
    assert timeline_colours(page)["grey"] == 0

    # Frame steps and jumps, by button and key.
    page.keyboard.press("Home")
    page.wait_for_function(f"document.getElementById('frame-label').textContent.startsWith('1 / {CLIP_FRAMES}')")
    page.click("#next-frame")
    page.wait_for_function("document.getElementById('frame-label').textContent.startsWith('2 /')")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.getElementById('frame-label').textContent.startsWith('3 /')")
    page.keyboard.press("Shift+ArrowRight")  # every frame is computed: the next one
    page.wait_for_function("document.getElementById('frame-label').textContent.startsWith('4 /')")
    page.click("#prev-computed")
    page.wait_for_function("document.getElementById('frame-label').textContent.startsWith('3 /')")

    # A new click on this frame makes every other computed frame stale: amber on the strip, said in the text.
    page.locator("#video-objects li[data-obj-id='1']").click()  # clicks go to object 1
    click_stage(page, 0.35, 0.35)
    page.locator("#progress-text", has_text="stale").wait_for()
    assert timeline_colours(page)["amber"] > 0 and "100%" not in page.inner_text("#progress-text")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.getElementById('frame-label').textContent.includes('(stale)')")
    page.keyboard.press("ArrowLeft")

    # Hide and opacity: per object and for all.
    page.wait_for_function(f"(s) => ({MASK_PIXELS})(s) >= 0", arg="video-stage")
    page.click("#video-hide-all")
    page.wait_for_function(f"(s) => ({MASK_PIXELS})(s) === 0", arg="video-stage")
    page.click("#video-hide-all")
    page.locator("#video-objects li[data-obj-id='1'] .hide", has_text="hide").click()
    page.locator("#video-objects li.hidden-mask[data-obj-id='1']").wait_for()
    set_range(page, "#video-opacity", 0.4)
    assert page.eval_on_selector("#video-stage .layer-mask", "c => c.style.opacity") == "0.4"

    # Export all three formats.
    png = download(page, "#export-png", tmp_path)
    with zipfile.ZipFile(png) as archive:
        names = archive.namelist()
        assert names and all(n.split("/")[0].isdigit() and n.endswith(".png") for n in names)
        with Image.open(io.BytesIO(archive.read(names[0]))) as mask:
            assert mask.mode == "L" and mask.size == (96, 96)
    rle = json.loads(download(page, "#export-rle", tmp_path).read_text())
    assert rle["session_id"] == sid and rle["video_hw"] == [96, 96] and len(rle["frames"]) == CLIP_FRAMES
    matte = download(page, "#export-matte", tmp_path)
    assert matte.suffix in (".mp4", ".zip") and matte.stat().st_size > 0
    page.screenshot(path=tmp_path / "exported.png")

    # The tab dies without a clean unload (its beacon never arrives); another tab lists the session and
    # continues it with its stored results.
    other = new_page(context, server, errors)
    entry = other.locator(f"#session-list li[data-session-id='{sid}']")
    entry.wait_for()
    assert "this page" not in entry.inner_text()
    close_without_beacon(page)
    entry.locator("button.adopt").click()
    other.locator("#video-info", has_text=f"session {sid}").wait_for()
    other.wait_for_function("document.querySelectorAll('#video-objects li').length >= 1")
    assert timeline_colours(other)["green"] + timeline_colours(other)["amber"] > 0
    time.sleep(HEARTBEAT_S + 2)  # the adopting page's heartbeat keeps it open
    assert sid in sessions(server)

    # Closing that tab cleanly closes the session; the uploaded clip is still there to reopen.
    other.close(run_before_unload=True)
    deadline = time.monotonic() + 10
    while sid in sessions(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sid not in sessions(server)
    third = new_page(context, server, errors)
    third.wait_for_function(
        "(p) => [...document.querySelectorAll('#video-select option')].some((o) => o.value === p)",
        arg=uploaded["video_path"],
    )
    third.select_option("#video-select", uploaded["video_path"])
    third.click("#video-open")
    third.locator("#video-info", has_text=f"{CLIP_FRAMES} frames").wait_for()
    third.close(run_before_unload=True)
    assert not errors, errors


def test_a_tab_that_dies_loses_its_session_after_the_heartbeat_timeout(context, editor_server):
    errors: list[str] = []
    page = new_page(context, editor_server, errors)
    page.wait_for_function("document.querySelectorAll('#video-select option').length >= 1")
    page.select_option("#video-select", label="shots/ (frames)")
    page.click("#video-open")
    page.locator("#video-info", has_text="3 frames").wait_for()
    sid = own_session(page)
    close_without_beacon(page)
    assert sid in sessions(editor_server)
    deadline = time.monotonic() + HEARTBEAT_S + 10
    while sid in sessions(editor_server) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert sid not in sessions(editor_server)  # closed by the service, not left for the 30 min TTL
    assert not errors, errors


def test_a_box_on_a_frame_folder_is_drawn_and_the_session_list_closes_others(context, editor_server, tmp_path):
    errors: list[str] = []
    server = editor_server
    stranger = httpx.post(server.url + "/track/start", json={"video_path": str(server.media_root / "shots")}).json()
    page = new_page(context, server, errors)
    page.wait_for_function("document.querySelectorAll('#video-select option').length >= 1")
    page.select_option("#video-select", label="shots/ (frames)")
    page.click("#video-open")
    page.locator("#video-info", has_text="3 frames").wait_for()
    marks = page.locator("#video-stage .layer-marks")
    box = visible_box(marks)
    with page.expect_response("**/track/prompt") as answer:
        page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.2 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.7 * box["height"], steps=6)
        page.mouse.up()
    assert answer.value.ok
    page.wait_for_timeout(300)
    # the released box stays drawn on the frame (white dashes on the marks layer)
    drawn = page.evaluate(MASK_PIXELS.replace(".layer-mask", ".layer-marks"), "video-stage")
    assert drawn > 50
    page.screenshot(path=tmp_path / "box_on_frames.png")
    # Undo of a box: a box replaced every object (a new concept), so undoing it clears the session.
    with page.expect_response("**/track/reset") as reset:
        page.click("#video-undo")
    assert reset.value.ok
    page.wait_for_function("document.querySelectorAll('#video-objects li').length === 0")
    page.wait_for_function(f"(s) => ({MASK_PIXELS.replace('.layer-mask', '.layer-marks')})(s) === 0", arg="video-stage")

    # Another client's session is listed with its age; the page can close it.
    other = page.locator(f"#session-list li[data-session-id='{stranger['session_id']}']")
    page.click("#video-refresh")
    other.wait_for()
    assert " old" in other.inner_text()
    other.locator("button.close").click()
    other.wait_for(state="detached")
    assert stranger["session_id"] not in sessions(server)
    page.close(run_before_unload=True)
    assert not errors, errors


def test_removed_object_is_explained_on_the_page(context, editor_server, astronaut, tmp_path):
    """Issue 23's "truck" report: the page says which rule removed the prompted object."""
    errors: list[str] = []
    page = new_page(context, editor_server, errors)
    archive = tmp_path / "truck.zip"
    archive.write_bytes(frames_zip(truck_frames(astronaut)))
    page.set_input_files("#video-upload", str(archive))
    page.locator("#video-info", has_text="12 frames").wait_for()
    page.fill("#video-text", "truck")
    with page.expect_response("**/track/prompt") as answer:
        page.press("#video-text", "Enter")
    assert answer.value.json()["object_ids"] == [0]
    page.select_option("#direction", "forward")
    page.click("#propagate")
    note = page.locator("#removal-note")
    note.wait_for(timeout=300_000)
    assert "Object 0 removed by the hot-start rule" in note.inner_text() and "official release" in note.inner_text()
    page.locator("#progress-text", has_text="100%").wait_for()
    page.wait_for_function("!document.querySelector(\"#video-objects li[data-obj-id='0']\")")  # left the list
    page.screenshot(path=tmp_path / "removal_note.png")
    page.close(run_before_unload=True)
    assert not errors, errors


def test_image_mode_editing_basics(context, editor_server, coffee, tmp_path):
    errors: list[str] = []
    page = context.new_page()
    page.set_default_timeout(90_000)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(editor_server.url + "/ui")
    photo = tmp_path / "coffee.jpg"
    Image.fromarray(coffee).save(photo, quality=92)
    page.set_input_files("#image-file", str(photo))
    marks = page.locator("#image-stage .layer-marks")
    marks.wait_for()
    box = visible_box(marks)

    # Two clicks, then undo: the object is segmented again from the first click alone.
    marks.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.45})
    page.locator("#click-info", has_text="score").wait_for()
    with page.expect_response("**/predict/mask"):
        marks.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.3})
    with page.expect_request("**/predict/mask") as sent:
        page.click("#undo-click")
    assert '"points"' not in sent.value.post_data or "[[" in sent.value.post_data
    page.locator("#click-info", has_text="score").wait_for()
    page.click("#new-object")

    # Detections, then the slider filters them live (no request), and colours stay with their rank.
    page.evaluate("document.getElementById('confidence').value = 0.05")
    page.fill("#text-input", "cup")
    page.press("#text-input", "Enter")
    page.wait_for_function("document.querySelectorAll('#object-list li').length > 2")
    swatches = page.locator("#object-list li .swatch").evaluate_all("s => s.map((e) => e.style.background)")
    scores = [float(s) for s in page.locator("#object-list li .score").all_inner_texts()[1:]]
    cut = sorted(scores)[len(scores) // 2]
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/detect" in r.url else None)
    set_range(page, "#confidence", cut + 1e-6)
    page.wait_for_function(
        f"document.querySelectorAll('#object-list li').length === {1 + sum(s > cut for s in scores)}"
    )
    set_range(page, "#confidence", 0.05)
    page.wait_for_function(f"document.querySelectorAll('#object-list li').length === {1 + len(scores)}")
    assert requests == []  # live, on the detections already returned
    again = page.locator("#object-list li .swatch").evaluate_all("s => s.map((e) => e.style.background)")
    assert again == swatches

    # Opacity and labels, then the download: a single-channel 0/255 PNG.
    set_range(page, "#image-opacity", 0.3)
    assert page.eval_on_selector("#image-stage .layer-mask", "c => c.style.opacity") == "0.3"
    page.uncheck("#image-labels")
    with page.expect_download() as saved:
        page.click("#download-mask")
    path = tmp_path / "mask.png"
    saved.value.save_as(path)
    with Image.open(path) as mask:
        assert mask.mode == "L" and mask.size == (coffee.shape[1], coffee.shape[0])
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        assert (np.asarray(mask) == 255).sum() == page.evaluate(MASK_PIXELS, "image-stage")

    page.click("#clear-all")
    page.wait_for_function("document.querySelectorAll('#object-list li').length === 0")
    assert page.evaluate(MASK_PIXELS, "image-stage") == 0
    assert not errors, errors


def test_redoc_makes_no_external_request(context, editor_server):
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(editor_server.url + "/redoc")
    page.get_by_text("API docs by Redocly").wait_for()
    page.wait_for_load_state("networkidle")
    local = (editor_server.url, f"blob:{editor_server.url}", "data:")  # ReDoc's worker runs from a blob: URL
    assert urls and all(u.startswith(local) for u in urls), urls
    assert any("redoc.standalone.js" in u for u in urls)
