"""GET /media/videos and GET /media/frame: only videos and frame folders under the media roots, nothing outside.

The real app in-process; these routes need no model, so the app runs without one (nothing to load).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.main import create_app
from server.routes.media import MAX_DEPTH
from tests.server.conftest import tiny_settings
from tests.server.media import moving_crops, write_video


@pytest.fixture(scope="module")
def tree(tmp_path_factory, astronaut) -> dict[str, Path]:
    """Two media roots with videos, frame folders and things that must not be listed; a folder outside them."""
    base = tmp_path_factory.mktemp("media_tree")
    root, second, outside = base / "root", base / "second", base / "outside"
    for folder in (root, second, outside):
        folder.mkdir()
    frames = moving_crops(astronaut, 5, size=64)
    write_video(root / "clip.mp4", frames)
    write_video(second / "other.mov", frames)
    write_video(outside / "secret.mp4", frames)
    shots = root / "shots"
    shots.mkdir()
    for i, frame in enumerate(frames[:3]):
        Image.fromarray(frame).save(shots / f"{i}.png")
    (root / "notes.txt").write_text("not a video")
    (root / "photo.jpg").write_bytes((shots / "0.png").read_bytes())  # frames in the root itself: not a folder item
    (root / ".hidden").mkdir()
    write_video(root / ".hidden" / "private.mp4", frames)
    deep = root.joinpath(*[f"d{i}" for i in range(MAX_DEPTH + 1)])
    deep.mkdir(parents=True)
    write_video(deep / "too_deep.mp4", frames)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "secret_link.mp4").symlink_to(outside / "secret.mp4")
    (root / "inside_link.mp4").symlink_to(root / "clip.mp4")
    (root / "loop").symlink_to(root, target_is_directory=True)
    return {"root": root, "second": second, "outside": outside}


@pytest.fixture(scope="module")
def client(tree) -> Iterator[TestClient]:
    settings = tiny_settings(
        random_weights=False,
        checkpoint=str(tree["outside"] / "no_model.pt"),
        media_roots=os.pathsep.join(str(tree[k]) for k in ("root", "second")),
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def test_lists_videos_and_frame_folders_under_every_root_and_nothing_else(client, tree):
    listing = client.get("/media/videos").json()
    root, second = str(tree["root"]), str(tree["second"])
    assert listing["roots"] == [root, second] and listing["truncated"] is False
    found = {(item["name"], item["kind"], item["root"]) for item in listing["items"]}
    assert found == {
        ("clip.mp4", "video", root),
        ("inside_link.mp4", "video", root),  # a symlink that stays inside is fine (listed by its real path)
        ("shots", "frames", root),
        ("other.mov", "video", second),
    }
    by_name = {item["name"]: item["path"] for item in listing["items"]}
    assert by_name["inside_link.mp4"] == str(tree["root"] / "clip.mp4")
    assert all(not item["path"].startswith(str(tree["outside"])) for item in listing["items"])


def test_every_listed_item_opens_as_a_tracking_session(client):
    # No model here: /track/start answers 503, but only after the path checks (a 403 or 4xx would say otherwise).
    for item in client.get("/media/videos").json()["items"]:
        answer = client.post("/track/start", json={"video_path": item["path"]})
        assert answer.status_code == 503 and answer.json()["detail"].startswith("model not loaded"), (item, answer.text)


def test_frame_of_a_video_and_of_a_frame_folder(client, tree, astronaut):
    frames = moving_crops(astronaut, 5, size=64)
    for path, index in ((tree["root"] / "clip.mp4", 3), (tree["root"] / "shots", 2)):
        answer = client.get("/media/frame", params={"video_path": str(path), "frame_idx": index})
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
        picture = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"), dtype=np.float32)
        assert picture.shape == (64, 64, 3)
        # the right frame: closest to frame `index` of the source (the pan moves 6 px a frame)
        errors = [np.abs(picture - f).mean() for f in frames]
        assert int(np.argmin(errors)) == index, errors


@pytest.mark.parametrize(
    "path, index, status, field",
    [
        ("{outside}/secret.mp4", 0, 403, "video_path"),
        ("{root}/escape/secret.mp4", 0, 403, "video_path"),  # through a symlink that leaves the root
        ("{root}/secret_link.mp4", 0, 403, "video_path"),
        ("{root}/../outside/secret.mp4", 0, 403, "video_path"),
        ("{root}/missing.mp4", 0, 400, "video_path"),
        ("{root}/notes.txt", 0, 415, "video_path"),
        ("{root}/clip.mp4", 5, 400, "frame_idx"),
        ("{root}/shots", 3, 400, "frame_idx"),
        ("{root}/clip.mp4", -1, 422, "frame_idx"),
    ],
)
def test_bad_frame_requests_are_4xx_naming_the_field(client, tree, path, index, status, field):
    video_path = path.format(root=tree["root"], outside=tree["outside"])
    answer = client.get("/media/frame", params={"video_path": video_path, "frame_idx": index})
    assert answer.status_code == status, answer.text
    assert field in answer.json()["detail"]


def test_page_and_redirect(client):
    redirect = client.get("/", follow_redirects=False)
    assert redirect.status_code in (302, 307) and redirect.headers["location"] == "/ui"
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/static/js/main.js">' in page.text
    script = client.get("/ui/static/js/main.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert client.get("/ui/static/../routes/ui.py").status_code == 404
