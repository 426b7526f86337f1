"""Streamed propagation, cancel, stored frames, remove/reset and session safety over a real uvicorn process
(tiny preset, random weights, real generated videos, real HTTP).

Timings are printed for the record, not asserted (speed is measured by ``bench/``); what is asserted is the
order of events: a frame line arrives before the last frame is computed, a click is answered before a
running propagation ends, a cancel or a disconnect frees the model.
"""

from __future__ import annotations

from unittest.mock import ANY

import base64
import json
import os
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from server.mask_codec import rle_to_mask
from tests.clients.conftest import start_server, stop_server
from tests.assertions import assert_error
from tests.server.media import decode_mask, moving_crops, write_video

# Each event these tests order (a frame line, a cancel, a stop, a disconnect, a click) takes effect within a
# frame or two of the propagation; 48 frames leave a margin of forty-odd frames. It is counted in frames, not
# seconds, so it holds on a slow machine and a fast one alike (every frame costs the same at the tiny preset).
FRAMES = 48
SIZE = 96


@pytest.fixture(scope="module")
def server(tmp_path_factory, astronaut):
    srv = start_server(tmp_path_factory.mktemp("track_stream"), {"SAM_MAX_SESSIONS": "16"}, timeout_s=1200)
    try:
        health = httpx.get(f"{srv.url}/health").json()
        assert health["model_loaded"], srv.log()
        write_video(srv.media_root / "long.mp4", moving_crops(astronaut, FRAMES, size=SIZE))
        yield srv
    finally:
        stop_server(srv)


def post(srv, path: str, body: dict, timeout: float = 1200) -> httpx.Response:
    return httpx.post(f"{srv.url}{path}", json=body, timeout=timeout)


def start_clicked(srv, sid: str, video: str = "long.mp4") -> None:
    r = post(srv, "/track/start", {"video_path": str(srv.media_root / video), "session_id": sid})
    assert r.status_code == 200, r.text
    r = post(srv, "/track/prompt", {"session_id": sid, "frame_idx": 0, "points": [[60, 50]], "obj_id": 1})
    assert r.status_code == 200, r.text


def stop(srv, sid: str) -> None:
    post(srv, "/track/stop", {"session_id": sid})


def test_stream_arrives_frame_by_frame_and_frames_returns_it(server):
    start_clicked(server, "stream")
    t0 = time.perf_counter()
    first_frame_s = None
    lines = []
    with httpx.stream(
        "POST",
        f"{server.url}/track/propagate",
        timeout=1800,
        json={"session_id": "stream", "direction": "forward", "stream": True, "mask_format": "rle"},
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        for raw in r.iter_lines():
            line = json.loads(raw)
            lines.append(line)
            if line["event"] == "frame" and first_frame_s is None:
                first_frame_s = time.perf_counter() - t0
                # read while the propagation runs: fewer frames are stored than planned
                stored = post(server, "/track/frames", {"session_id": "stream", "mask_format": "rle"}).json()["frames"]
                assert len(stored) < FRAMES
    total_s = time.perf_counter() - t0
    print(f"\nfirst streamed frame after {first_frame_s:.2f} s, {FRAMES} frames in {total_s:.2f} s")
    assert lines[0] == {"event": "start", "session_id": "stream", "total": FRAMES}
    frames = [x for x in lines if x["event"] == "frame"]
    assert [f["frame_idx"] for f in frames] == list(range(FRAMES))
    assert [f["done"] for f in frames] == list(range(1, FRAMES + 1)) and {f["total"] for f in frames} == {FRAMES}
    end = lines[-1]
    assert end == {"event": "end", "num_frames_processed": FRAMES, "cancelled": False, "removed_objects": ANY}
    assert isinstance(end["removed_objects"], list)  # extension: what a hot-start rule removed, and why

    png = post(server, "/track/frames", {"session_id": "stream", "start": 0, "end": FRAMES - 1}).json()["frames"]
    rle = post(server, "/track/frames", {"session_id": "stream", "mask_format": "rle"}).json()["frames"]
    assert [f["frame_idx"] for f in png] == list(range(FRAMES))
    some = 0
    for streamed, p, q in zip(frames, png, rle):
        assert streamed["object_ids"] == p["object_ids"] == q["object_ids"] and streamed["boxes"] == p["boxes"]
        for a, b, c in zip(streamed["masks"], p["masks"], q["masks"]):
            mask = rle_to_mask(a)
            assert mask.shape == (SIZE, SIZE)
            np.testing.assert_array_equal(mask, decode_mask(base64.b64decode(b)) > 0)
            np.testing.assert_array_equal(mask, rle_to_mask(c))
            some += int(mask.any())
    window = post(server, "/track/frames", {"session_id": "stream", "start": 5, "end": 7}).json()["frames"]
    assert [f["frame_idx"] for f in window] == [5, 6, 7]
    # the plain JSON reply is unchanged, and equals the stream
    plain = post(server, "/track/propagate", {"session_id": "stream", "direction": "forward", "mask_format": "rle"})
    assert plain.status_code == 200 and plain.json()["num_frames_processed"] == FRAMES
    assert [f["masks"] for f in plain.json()["frames"]] == [f["masks"] for f in frames]
    stop(server, "stream")


def _stream_in_thread(srv, sid: str, events: list, first: threading.Event, stop_after_first: bool = False):
    def run():
        with httpx.stream(
            "POST",
            f"{srv.url}/track/propagate",
            timeout=1800,
            json={"session_id": sid, "direction": "forward", "stream": True},
        ) as r:
            for raw in r.iter_lines():
                events.append((time.perf_counter(), json.loads(raw)))
                if events[-1][1]["event"] == "frame":
                    first.set()
                    if stop_after_first:
                        return  # leaving the block closes the connection: a disconnect

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_cancel_stops_within_a_frame_and_frees_the_model(server):
    start_clicked(server, "cancel")
    events: list = []
    first = threading.Event()
    thread = _stream_in_thread(server, "cancel", events, first)
    assert first.wait(1200)
    assert_error(
        post(server, "/track/prompt", {"session_id": "cancel", "frame_idx": 0, "points": [[5, 5]]}),
        409,
        "propagation is running",
    )
    r = post(server, "/track/cancel", {"session_id": "cancel"})
    assert r.json() == {"session_id": "cancel", "cancelled": True}
    thread.join(1800)
    last = events[-1][1]
    assert last["event"] == "end" and last["cancelled"] is True and last["num_frames_processed"] < FRAMES
    assert post(server, "/track/cancel", {"session_id": "cancel"}).json()["cancelled"] is False
    t0 = time.perf_counter()
    r = post(server, "/track/prompt", {"session_id": "cancel", "frame_idx": 3, "points": [[60, 50]], "obj_id": 1})
    print(f"\nclick right after a cancel answered in {time.perf_counter() - t0:.2f} s")
    assert r.status_code == 200, r.text
    stored = post(server, "/track/frames", {"session_id": "cancel"}).json()["frames"]
    assert len(stored) >= last["num_frames_processed"]  # frames computed so far stay in the session
    stop(server, "cancel")


def test_disconnect_stops_the_propagation(server):
    start_clicked(server, "gone")
    events: list = []
    first = threading.Event()
    _stream_in_thread(server, "gone", events, first, stop_after_first=True).join(1800)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the session is released once the server notices the disconnect
        r = post(server, "/track/prompt", {"session_id": "gone", "frame_idx": 0, "points": [[60, 50]], "obj_id": 1})
        if r.status_code == 200:
            break
        assert r.status_code == 409, r.text
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    stored = post(server, "/track/frames", {"session_id": "gone"}).json()["frames"]
    assert 1 <= len(stored) < FRAMES
    stop(server, "gone")


def test_a_click_during_a_propagation_is_answered_before_it_ends(server):
    start_clicked(server, "long")
    start_clicked(server, "other")
    events: list = []
    first = threading.Event()
    thread = _stream_in_thread(server, "long", events, first)
    assert first.wait(1200)
    t0 = time.perf_counter()
    r = post(server, "/track/prompt", {"session_id": "other", "frame_idx": 2, "points": [[40, 40]], "obj_id": 3})
    answered = time.perf_counter()
    assert r.status_code == 200, r.text
    thread.join(1800)
    ends = [t for t, e in events if e["event"] == "end"]
    assert ends and answered < ends[0], "the click waited for the whole propagation"
    frame_times = [t for t, e in events if e["event"] == "frame"]
    per_frame = (frame_times[-1] - frame_times[0]) / max(1, len(frame_times) - 1)
    print(f"\nclick during a propagation answered in {answered - t0:.2f} s (one frame: {per_frame:.2f} s)")
    stop(server, "long")
    stop(server, "other")


def test_stop_during_a_propagation_closes_and_frees(server):
    start_clicked(server, "stopme")
    events: list = []
    first = threading.Event()
    thread = _stream_in_thread(server, "stopme", events, first)
    assert first.wait(1200)
    assert post(server, "/track/stop", {"session_id": "stopme"}).json()["closed"] is True
    thread.join(1800)
    assert events[-1][1]["event"] == "end" and events[-1][1]["cancelled"] is True
    assert_error(post(server, "/track/frames", {"session_id": "stopme"}), 404, "session_id")
    # the id can be used again at once
    r = post(server, "/track/start", {"video_path": str(server.media_root / "long.mp4"), "session_id": "stopme"})
    assert r.status_code == 200, r.text
    stop(server, "stopme")


def test_remove_object_and_reset(server):
    start_clicked(server, "edit")
    r = post(server, "/track/prompt", {"session_id": "edit", "frame_idx": 0, "points": [[20, 20]], "obj_id": 9})
    assert r.status_code == 200
    r = post(server, "/track/propagate", {"session_id": "edit", "direction": "forward", "max_frames": 4})
    assert r.status_code == 200 and r.json()["num_frames_processed"] == 5
    assert post(server, "/track/remove_object", {"session_id": "edit", "obj_id": 9}).json() == {
        "session_id": "edit",
        "removed": True,
    }
    assert post(server, "/track/remove_object", {"session_id": "edit", "obj_id": 9}).json()["removed"] is False
    frames = post(server, "/track/frames", {"session_id": "edit"}).json()["frames"]
    assert frames and all(9 not in f["object_ids"] for f in frames)
    assert post(server, "/track/reset", {"session_id": "edit"}).json() == {"session_id": "edit", "reset": True}
    assert post(server, "/track/frames", {"session_id": "edit"}).json()["frames"] == []
    assert_error(post(server, "/track/propagate", {"session_id": "edit"}), 409, "session_id")
    stop(server, "edit")


@pytest.mark.parametrize(
    "path, body, status, field",
    [
        ("/track/frames", {"session_id": "nope"}, 404, "session_id"),
        ("/track/cancel", {"session_id": "nope"}, 404, "session_id"),
        ("/track/remove_object", {"session_id": "nope", "obj_id": 1}, 404, "session_id"),
        ("/track/reset", {"session_id": "nope"}, 404, "session_id"),
        ("/track/frames", {"session_id": "bad", "start": 5, "end": 2}, 400, "end"),
        ("/track/frames", {"session_id": "bad", "start": 1000}, 400, "start"),
        ("/track/frames", {"session_id": "bad", "mask_format": "jpeg"}, 422, "mask_format"),
        ("/track/propagate", {"session_id": "bad", "mask_format": "gif"}, 422, "mask_format"),
        ("/track/prompt", {"session_id": "bad", "frame_idx": 0, "text": "a", "mask_format": 1}, 422, "mask_format"),
        ("/track/prompt", {"session_id": "bad", "frame_idx": 0, "points": [[1, 1]], "obj_id": 2**63}, 422, "obj_id"),
        ("/track/prompt", {"session_id": "bad", "frame_idx": 2**70, "text": "a"}, 422, "frame_idx"),
        ("/track/remove_object", {"session_id": "bad", "obj_id": 2**64}, 422, "obj_id"),
        ("/track/propagate", {"session_id": "bad", "max_frames": 2**65}, 422, "max_frames"),
        ("/track/propagate", {"session_id": "bad", "start_frame": 99}, 400, "start_frame"),
        (
            "/track/prompt",
            {"session_id": "bad", "frame_idx": 0, "boxes": [0.5, 0.5, 0.2, 0.2], "box_labels": [2]},
            400,
            "box_labels",
        ),
        ("/track/cancel", {"session_id": "bad", "extra": 1}, 422, "extra"),
    ],
)
def test_bad_input_is_4xx_json(server, path, body, status, field):
    if post(server, "/track/frames", {"session_id": "bad"}).status_code == 404:
        r = post(server, "/track/start", {"video_path": str(server.media_root / "long.mp4"), "session_id": "bad"})
        assert r.status_code == 200, r.text
    assert_error(post(server, path, body), status, field)


def test_hostile_video_paths(server, tmp_path, astronaut):
    root = server.media_root
    outside = tmp_path / "outside"
    outside.mkdir()
    for i in range(2):
        Image.fromarray(astronaut[:32, :32]).save(outside / f"{i}.jpg")
    inner = root / "sneaky"
    inner.mkdir(exist_ok=True)
    for f in outside.iterdir():
        if not (inner / f.name).exists():
            (inner / f.name).symlink_to(f)
    text = assert_error(post(server, "/track/start", {"video_path": str(inner)}), 403, "video_path")
    assert str(root) + " " not in text and "SAM_MEDIA_ROOTS" in text
    link = root / "link_out"
    if not link.exists():
        link.symlink_to(outside)
    # the same words for every path outside the roots, never where a symlink leads (tests/server/test_hostile_clients.py)
    assert assert_error(post(server, "/track/start", {"video_path": str(link)}), 403, "video_path") == text
    loop = root / "loop.mp4"
    if not loop.exists():
        loop.symlink_to(loop)
    assert_error(post(server, "/track/start", {"video_path": str(loop)}), 400, "video_path")
    assert_error(post(server, "/track/start", {"video_path": str(root / ("x" * 300 + ".mp4"))}), 400, "video_path")
    assert_error(post(server, "/track/start", {"video_path": "~nosuchuser_zz/clip.mp4"}), 403, "video_path")
    fifo = root / "pipe.mp4"
    if not fifo.exists():
        os.mkfifo(fifo)
    # a FIFO is refused without being opened: a hang would end in httpx's timeout, a failure
    assert_error(post(server, "/track/start", {"video_path": str(fifo)}, timeout=20), 415, "video_path")
    arabic = root / "arabic"
    arabic.mkdir(exist_ok=True)
    for i, name in enumerate("٠١٢"):
        Image.fromarray(astronaut[8 * i : 8 * i + 32, :32]).save(arabic / f"{name}.jpg")
    r = post(server, "/track/start", {"video_path": str(arabic), "session_id": "arabic"})
    assert r.status_code == 200 and r.json()["num_frames"] == 3, r.text
    stop(server, "arabic")
    assert httpx.get(f"{server.url}/health").json()["status"] == "running"


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory, astronaut):
    """Small limits and a short idle time: frame count, frame size and expiry."""
    srv = start_server(
        tmp_path_factory.mktemp("track_limits"),
        {"SAM_MAX_VIDEO_FRAMES": "12", "SAM_MAX_VIDEO_SIDE": "512", "SAM_SESSION_TTL_S": "1"},
        timeout_s=1200,
    )
    try:
        write_video(srv.media_root / "twelve.mp4", moving_crops(astronaut, 12, size=64))
        write_video(srv.media_root / "thirteen.mp4", moving_crops(astronaut, 13, size=64))
        write_video(srv.media_root / "wide.mp4", [np.zeros((16, 640, 3), np.uint8)] * 2)
        yield srv
    finally:
        stop_server(srv)


def test_frame_count_and_size_limits(strict_server):
    srv = strict_server
    r = post(srv, "/track/start", {"video_path": str(srv.media_root / "twelve.mp4"), "session_id": "ok"})
    assert r.status_code == 200 and r.json()["num_frames"] == 12, r.text
    stop(srv, "ok")
    assert_error(post(srv, "/track/start", {"video_path": str(srv.media_root / "thirteen.mp4")}), 413, "video_path")
    assert_error(post(srv, "/track/start", {"video_path": str(srv.media_root / "wide.mp4")}), 413, "video_path")


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory, astronaut):
    """A 1 s idle time and a clip of IDLE_FRAMES: a propagation over it lasts IDLE_FRAMES frames, tens of times
    the idle time at the tiny preset's per-frame cost here (the margin is counted in frames, whatever the machine)."""
    srv = start_server(tmp_path_factory.mktemp("track_idle"), {"SAM_SESSION_TTL_S": "1"}, timeout_s=1200)
    try:
        write_video(srv.media_root / "idle.mp4", moving_crops(astronaut, IDLE_FRAMES, size=64, step=3))
        yield srv
    finally:
        stop_server(srv)


IDLE_FRAMES = 120


def test_a_session_in_use_never_expires(idle_server):
    srv = idle_server
    r = post(srv, "/track/start", {"video_path": str(srv.media_root / "idle.mp4"), "session_id": "busy"})
    assert r.status_code == 200
    assert post(srv, "/track/prompt", {"session_id": "busy", "frame_idx": 0, "points": [[30, 30]]}).status_code == 200
    # a propagation over IDLE_FRAMES frames outlasts the 1 s idle time: the session must survive it
    t0 = time.perf_counter()
    with httpx.stream(
        "POST",
        f"{srv.url}/track/propagate",
        timeout=1800,
        json={"session_id": "busy", "direction": "forward", "stream": True},
    ) as resp:
        lines = [json.loads(raw) for raw in resp.iter_lines()]
    took = time.perf_counter() - t0
    assert took > 1, f"the propagation took {took:.2f} s, under the 1 s idle time: nothing was tested"
    assert lines[-1]["event"] == "end" and lines[-1]["cancelled"] is False, lines[-1]
    assert lines[-1]["num_frames_processed"] == IDLE_FRAMES
    print(f"\n{IDLE_FRAMES}-frame propagation took {took:.1f} s with a 1 s idle time")
    assert post(srv, "/track/frames", {"session_id": "busy"}).status_code == 200
    time.sleep(3.5)
    assert_error(post(srv, "/track/frames", {"session_id": "busy"}), 404, "session_id")
    assert httpx.get(f"{srv.url}/health").json()["active_sessions"] == 0
