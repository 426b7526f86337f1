"""The editor's routes on the real app (tiny preset, dev-mode random weights, fp32): ``POST /media/upload``,
``POST /track/export`` in its three formats, ``GET /track/sessions`` and ``POST /track/heartbeat``, and the
``removed_objects`` that say why a propagation emptied a prompted object (issue 23's "truck" case)."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from milimo_clients import decode_rle
from server.main import create_app
from tests.server.conftest import tiny_settings
from tests.server.media import decode_mask, write_video

HEARTBEAT_S = 1.5


def truck_frames(photo: np.ndarray, n: int = 12) -> list[np.ndarray]:
    """The clip of issue 23's report, as frames: a 160 px window panning across a real photo."""
    return [np.ascontiguousarray(photo[100:260, 100 + i * 8 : 260 + i * 8]) for i in range(n)]


def frames_zip(frames: list[np.ndarray], names=None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, frame in enumerate(frames):
            jpeg = io.BytesIO()
            Image.fromarray(frame).save(jpeg, format="JPEG", quality=95)
            archive.writestr(names[i] if names else f"clip/{i:05d}.jpg", jpeg.getvalue())
        archive.writestr("__MACOSX/._00000.jpg", b"junk the upload skips")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("editor_media")


@pytest.fixture(scope="module")
def client(media: Path) -> Iterator[TestClient]:
    settings = tiny_settings(
        media_roots=str(media),
        precision="fp32",
        max_sessions=3,
        max_video_frames=20,
        max_upload_video_mb=1.0,
        session_heartbeat_s=HEARTBEAT_S,
        upload_retention_s=0,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        assert test_client.get("/health").json()["model_loaded"]
        yield test_client


@pytest.fixture(scope="module")
def tracked(client, astronaut) -> dict:
    """An uploaded zip of frames, a text prompt and a forward propagation (issue 23's report)."""
    up = client.post("/media/upload", files={"file": ("truck clip.zip", frames_zip(truck_frames(astronaut)))})
    assert up.status_code == 200, up.text
    sid = client.post("/track/start", json={"video_path": up.json()["video_path"]}).json()["session_id"]
    prompt = client.post("/track/prompt", json={"session_id": sid, "frame_idx": 0, "text": "truck"}).json()
    prop = client.post("/track/propagate", json={"session_id": sid, "direction": "forward"}).json()
    return {"upload": up.json(), "sid": sid, "prompt": prompt, "prop": prop}


def test_upload_is_stored_under_the_media_roots_and_listed(client, media, tracked):
    up = tracked["upload"]
    assert (up["num_frames"], up["width"], up["height"], up["kind"]) == (12, 160, 160, "frames")
    path = Path(up["video_path"])
    assert path.parent == media / "sam_uploads" and sorted(p.name for p in path.iterdir())[0] == "00000.jpg"
    assert len(list(path.iterdir())) == 12  # the __MACOSX entry was skipped
    listed = {item["path"]: item for item in client.get("/media/videos").json()["items"]}
    assert listed[str(path)]["kind"] == "frames"


def test_a_prompted_object_removed_by_the_hotstart_rule_says_why(tracked):
    """Object 0 on the prompt frame, then empty on every frame after propagation: the official release does
    the same on the same weights (tests/parity/test_removal_parity.py); the answer names the rule."""
    assert tracked["prompt"]["object_ids"] == [0]
    prop = tracked["prop"]
    assert all(0 not in f["object_ids"] for f in prop["frames"])
    (removal,) = prop["removed_objects"]
    assert removal["obj_id"] == 0 and removal["rule"] == "hotstart_unmatched"
    assert len(removal["frames"]) == 8 and removal["frame_idx"] == removal["frames"][-1]
    assert "hot-start" in removal["detail"] and "official release" in removal["detail"]


def test_the_stream_end_event_carries_the_removals(client, tracked):
    sid = tracked["sid"]
    client.post("/track/prompt", json={"session_id": sid, "frame_idx": 0, "text": "truck"})
    with client.stream("POST", "/track/propagate", json={"session_id": sid, "stream": True}) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[-1]["event"] == "end" and lines[-1]["removed_objects"][0]["rule"] == "hotstart_unmatched"


def _stored(client, sid) -> dict[int, dict[int, np.ndarray]]:
    frames = client.post("/track/frames", json={"session_id": sid, "mask_format": "rle"}).json()["frames"]
    return {f["frame_idx"]: {i: decode_rle(m) for i, m in zip(f["object_ids"], f["masks"])} for f in frames}


def test_export_png_zip_rle_json_and_matte_mp4_hold_the_stored_masks(client, tracked):
    import av

    sid = tracked["sid"]
    stored = _stored(client, sid)
    objects = sorted({i for per in stored.values() for i in per})
    assert objects, "the propagation tracked nothing to export"

    png = client.post("/track/export", json={"session_id": sid, "format": "png_zip"})
    assert png.status_code == 200 and png.headers["content-type"] == "application/zip"
    assert (
        png.headers["content-disposition"].startswith("attachment; filename=")
        and ".zip" in png.headers["content-disposition"]
    )
    with zipfile.ZipFile(io.BytesIO(png.content)) as archive:
        names = set(archive.namelist())
        assert names == {f"{o}/{t:05d}.png" for o in objects for t in stored}
        for t, per in stored.items():
            for o in objects:
                mask = decode_mask(archive.read(f"{o}/{t:05d}.png"))  # single-channel 8-bit
                assert mask.shape == (160, 160) and set(np.unique(mask)) <= {0, 255}
                assert np.array_equal(mask == 255, per.get(o, np.zeros((160, 160), bool)))

    rle = client.post("/track/export", json={"session_id": sid, "format": "rle_json"})
    assert rle.headers["content-type"] == "application/json" and "_rle.json" in rle.headers["content-disposition"]
    body = rle.json()
    assert body["session_id"] == sid and body["video_hw"] == [160, 160]
    assert [f["frame_idx"] for f in body["frames"]] == sorted(stored)
    for f in body["frames"]:
        assert {i: decode_rle(m).tolist() for i, m in zip(f["object_ids"], f["masks"])} == {
            i: m.tolist() for i, m in stored[f["frame_idx"]].items()
        }

    one = objects[0]
    matte = client.post("/track/export", json={"session_id": sid, "format": "matte_mp4", "obj_ids": [one]})
    assert matte.headers["content-type"] == "video/mp4" and f"obj{one}.mp4" in matte.headers["content-disposition"]
    with av.open(io.BytesIO(matte.content)) as container:
        decoded = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    assert len(decoded) == 12  # every frame of the range, black where nothing was computed
    for t, gray in enumerate(decoded):
        assert np.array_equal(gray == 255, stored.get(t, {}).get(one, np.zeros((160, 160), bool)))
        assert set(np.unique(gray)) <= {0, 255}  # lossless

    several = client.post("/track/export", json={"session_id": sid, "format": "matte_mp4", "start": 2, "end": 4})
    if len(objects) > 1:
        assert several.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(several.content)) as archive:
            assert set(archive.namelist()) == {f"object_{o}.mp4" for o in objects}
    else:
        assert several.headers["content-type"] == "video/mp4"


def test_export_refusals_name_the_field(client, tracked):
    sid = tracked["sid"]
    bad = client.post("/track/export", json={"session_id": sid, "format": "gif"})
    assert bad.status_code == 422 and "format" in bad.json()["detail"]
    bad = client.post("/track/export", json={"session_id": sid, "format": "png_zip", "obj_ids": [999]})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("obj_ids:")
    bad = client.post("/track/export", json={"session_id": sid, "format": "png_zip", "start": 50})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("start:")
    assert client.post("/track/export", json={"session_id": "nope", "format": "png_zip"}).status_code == 404


def test_sessions_list_and_a_silent_page_closes_its_session(client, tracked, astronaut, media):
    up = client.post("/media/upload", files={"file": ("two.zip", frames_zip(truck_frames(astronaut, 3)))}).json()
    sid = client.post("/track/start", json={"video_path": up["video_path"]}).json()["session_id"]
    listed = {s["session_id"]: s for s in client.get("/track/sessions").json()["sessions"]}
    assert {sid, tracked["sid"]} <= set(listed)
    mine = listed[sid]
    assert mine["video_path"] == up["video_path"] and mine["num_frames"] == 3 and mine["frames_computed"] == 0
    assert mine["busy"] is False and mine["created"] <= time.time() and mine["heartbeat"] is False
    assert listed[tracked["sid"]]["frames_computed"] == 12

    beat = client.post("/track/heartbeat", json={"session_id": sid}).json()
    assert beat["session_id"] == sid and 0 < beat["expires_in"] <= HEARTBEAT_S
    assert client.post("/track/heartbeat", json={"session_id": "gone"}).status_code == 404
    time.sleep(HEARTBEAT_S + 1.0)  # no heartbeat: the sweep closes it (the one that never sent any stays)
    client.get("/health")
    listed = {s["session_id"] for s in client.get("/track/sessions").json()["sessions"]}
    assert sid not in listed and tracked["sid"] in listed
    # SAM_UPLOAD_RETENTION_S=0: its upload went with it
    assert not Path(up["video_path"]).exists()


def test_upload_limits_are_413_naming_the_limit_and_leave_nothing(client, media, astronaut, tmp_path):
    uploads = media / "sam_uploads"
    listing = lambda: set(uploads.iterdir()) if uploads.exists() else set()  # noqa: E731 (made by the first upload)
    before = listing()
    big = client.post("/media/upload", files={"file": ("big.mp4", b"\0" * (2 * 1024 * 1024))})
    assert big.status_code == 413 and "SAM_MAX_UPLOAD_VIDEO_MB" in big.json()["detail"]
    many = client.post("/media/upload", files={"file": ("many.zip", frames_zip(truck_frames(astronaut, 21)))})
    assert many.status_code == 413 and "SAM_MAX_VIDEO_FRAMES" in many.json()["detail"]
    long = tmp_path / "long.mp4"
    write_video(long, [f[:64, :64] for f in truck_frames(astronaut, 21)])
    video = client.post("/media/upload", files={"file": ("long.mp4", long.read_bytes())})
    assert video.status_code == 413 and "SAM_MAX_VIDEO_FRAMES" in video.json()["detail"]
    text = client.post("/media/upload", files={"file": ("notes.txt", b"hello")})
    assert text.status_code == 415 and text.json()["detail"].startswith("file:")
    fake = client.post("/media/upload", files={"file": ("fake.mp4", b"not a video at all")})
    assert fake.status_code == 415 and fake.json()["detail"].startswith("file:")
    assert listing() == before  # nothing refused was kept

    short = tmp_path / "short.mp4"
    write_video(short, [f[:64, :64] for f in truck_frames(astronaut, 4)])
    ok = client.post("/media/upload", files={"file": ("my clip.mp4", short.read_bytes())})
    assert ok.status_code == 200 and ok.json()["num_frames"] == 4 and ok.json()["kind"] == "video"
    assert Path(ok.json()["video_path"]).name.endswith("_my_clip.mp4")


def test_upload_retention_sweep(tmp_path):
    """Past the retention an upload goes unless a session uses it; a fresh one is kept the time to open it."""
    import os

    from server.services.upload_store import UNOPENED_GRACE_S, UploadStore

    store = UploadStore(tiny_settings(media_roots=str(tmp_path), upload_retention_s=100))
    store.folder.mkdir()
    old, used, fresh = (store.folder / name for name in ("old.mp4", "used", "fresh.mp4"))
    old.write_bytes(b"x")
    used.mkdir()
    fresh.write_bytes(b"x")
    past = time.time() - 500
    for path in (old, used):
        os.utime(path, (past, past))
    assert store.sweep({str(used)}) == ["old.mp4"]
    assert used.exists() and fresh.exists() and not old.exists()
    store.session_closed("s", str(used))  # its session closed: the retention clock starts now
    assert store.sweep(set()) == [] and used.exists()
    store.session_closed("s", str(tmp_path / "elsewhere.mp4"))  # not an upload: nothing happens

    now_only = UploadStore(tiny_settings(media_roots=str(tmp_path), upload_retention_s=0))
    assert now_only.sweep(set()) == []  # retention 0: a fresh upload still gets UNOPENED_GRACE_S
    assert UNOPENED_GRACE_S > 0 and fresh.exists()
    now_only.session_closed("s", str(used))  # ...and a closed session's upload goes at once
    assert not used.exists()
