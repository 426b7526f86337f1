"""The web page in a real browser: Debian's Chromium driven by Playwright for Python, against a real uvicorn
process (tiny preset, random weights) whose media root holds a generated video and a folder of frames.

Playwright's own browser download is not used: ``run_tests.sh`` installs the ``chromium`` package when it is
missing (as root), and these tests fail, saying so, when there is no Chromium at all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.clients.conftest import LiveServer, start_server, stop_server
from tests.server.media import moving_crops, write_video

VIDEO_FRAMES = 6
LONG_FRAMES = 40


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("no Chromium: install Debian's `chromium` (run_tests.sh does as root) or set CHROMIUM=/path")
    return path


def visible_box(locator) -> dict:
    """The locator's box once it is visible (Playwright's ``bounding_box`` is None for a canvas not laid out yet,
    e.g. while a frame still loads on a busy machine)."""
    locator.wait_for(state="visible")
    box = locator.bounding_box()
    assert box is not None and box["width"] > 0 and box["height"] > 0, box
    return box


def open_video(page, label: str, frames: int) -> None:
    """In video mode, open the listed video ``label`` and wait until the page reports its ``frames`` and shows a
    frame: the frame label and the video's facts come with the session, its picture afterwards (a button that acts on
    the picture, "Everything", only says "nothing on the stage yet" before it)."""
    page.click("nav .tab[data-mode=video]")
    page.wait_for_function("document.querySelectorAll('#video-select option').length >= 2")
    page.select_option("#video-select", label=label)
    page.click("#video-open")
    page.locator("#video-info", has_text=f"{frames} frames").wait_for()
    page.locator("#video-stage .layer-image.ready").wait_for()


def fill_media(media: Path, photo: np.ndarray) -> None:
    """A short video, a folder of frames, and things the listing must leave out."""
    write_video(media / "clip.mp4", moving_crops(photo, VIDEO_FRAMES, size=160, step=8))
    write_video(media / "long.mp4", moving_crops(photo, LONG_FRAMES, size=64, step=6))  # to cancel
    shots = media / "shots"
    shots.mkdir()
    for i, frame in enumerate(moving_crops(photo, 3, size=64)):
        Image.fromarray(frame).save(shots / f"{i}.jpg")
    (media / "notes.txt").write_text("not a video")


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory, astronaut) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("ui"), {})
    fill_media(server.media_root, astronaut)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module. Not for the session: Playwright's sync API holds an event loop in the main
    thread while it is open, and tests of other modules that run later (in a shuffled order) call asyncio.run."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture()
def page(ui_server, browser):
    """A fresh page on the service; fails the test on any uncaught JavaScript error."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)  # the tiny model on a busy CPU
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
