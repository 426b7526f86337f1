"""/track/*: request validation (media roots, probing, sessions) and, when the video predictor exists, a session."""

from __future__ import annotations

import base64
import os
import threading
import time

import pytest
from PIL import Image

from tests.server.media import decode_mask, moving_crops, write_video
from tests.assertions import assert_error


@pytest.fixture(scope="module")
def video(media_root, astronaut):
    return write_video(media_root / "pan.mp4", moving_crops(astronaut, 6))


@pytest.fixture(scope="module")
def frame_folder(media_root, astronaut):
    folder = media_root / "frames"
    folder.mkdir(exist_ok=True)
    for i, frame in enumerate(moving_crops(astronaut, 4)):
        Image.fromarray(frame).save(folder / f"{i}.jpg")
    return folder


# ---------------------------------------------------------------- /track/start validation


def test_path_outside_media_roots_is_403(client, tmp_path, astronaut):
    outside = write_video(tmp_path / "outside.mp4", moving_crops(astronaut, 2))
    assert_error(client.post("/track/start", json={"video_path": str(outside)}), 403, "video_path")


def test_dotdot_escape_is_403(client, media_root):
    sneaky = os.path.join(str(media_root), "..", "..", "etc")
    assert_error(client.post("/track/start", json={"video_path": sneaky}), 403, "video_path")


def test_symlink_out_of_the_roots_is_403(client, media_root, tmp_path):
    target = tmp_path / "secret"
    target.mkdir()
    link = media_root / "link_out"
    if not link.exists():
        link.symlink_to(target)
    assert_error(client.post("/track/start", json={"video_path": str(link)}), 403, "video_path")


def test_missing_file_is_400(client, media_root):
    assert_error(client.post("/track/start", json={"video_path": str(media_root / "nope.mp4")}), 400, "video_path")


def test_not_a_video_is_415(client, media_root):
    (media_root / "notes.txt").write_text("hello")
    (media_root / "fake.mp4").write_bytes(b"hello, not a movie" * 50)
    empty = media_root / "empty_folder"
    empty.mkdir(exist_ok=True)
    for name in ("notes.txt", "fake.mp4", "empty_folder"):
        assert_error(client.post("/track/start", json={"video_path": str(media_root / name)}), 415, "video_path")


def test_unreadable_frame_is_400(client, media_root):
    folder = media_root / "broken_frames"
    folder.mkdir(exist_ok=True)
    (folder / "0.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert_error(client.post("/track/start", json={"video_path": str(folder)}), 400, "video_path")


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "video_path"),
        ({"video_path": ""}, "video_path"),
        ({"video_path": "x.mp4", "session_id": "../../etc"}, "session_id"),
        ({"video_path": "x.mp4", "unknown": 1}, "unknown"),
    ],
)
def test_start_body_validation_is_422(client, body, field):
    assert_error(client.post("/track/start", json=body), 422, field)


def test_malformed_json_body_is_400(client):
    r = client.post("/track/start", content=b'{"video_path": ', headers={"content-type": "application/json"})
    assert_error(r, 400, "body")
    assert_error(client.post("/track/start", json=["x.mp4"]), 422, "body")


def test_start_needs_a_json_body(client):
    response = client.post("/track/start", content=b"video_path=x", headers={"content-type": "text/plain"})
    assert_error(response, 422, "body: Input should be a valid dictionary")


# ---------------------------------------------------------------- sessions that do not exist


def test_prompt_and_propagate_unknown_session_are_404(client):
    r = client.post("/track/prompt", json={"session_id": "nope", "frame_idx": 0, "text": "person"})
    assert_error(r, 404, "session_id")
    r = client.post("/track/propagate", json={"session_id": "nope", "direction": "forward"})
    assert_error(r, 404, "session_id")


def test_stop_unknown_session_is_200_not_closed(client):
    r = client.post("/track/stop", json={"session_id": "never-started"})
    assert r.status_code == 200 and r.json() == {"session_id": "never-started", "closed": False}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"session_id": "s", "frame_idx": -1, "text": "a"}, "frame_idx"),
        ({"session_id": "s", "text": "a"}, "frame_idx"),
        ({"session_id": "s", "frame_idx": 0, "obj_id": "one", "text": "a"}, "obj_id"),
        ({"session_id": "s", "direction": "sideways"}, "direction"),
        ({"session_id": "s", "max_frames": -2}, "max_frames"),
    ],
)
def test_prompt_and_propagate_body_validation_is_422(client, body, field):
    path = "/track/propagate" if "direction" in body or "max_frames" in body else "/track/prompt"
    assert_error(client.post(path, json=body), 422, field)


def test_without_the_predictor_track_start_is_503(client, video, monkeypatch):
    # A deployment without the video module: make its import fail (a None entry in sys.modules does that).
    import sys

    tracking = client.app.state.tracking
    built = tracking.predictor
    monkeypatch.setitem(sys.modules, "sam3.inference.video_predictor", None)
    tracking.predictor = None
    try:
        detail = assert_error(client.post("/track/start", json={"video_path": str(video)}), 503, "video predictor")
        assert detail.startswith("video predictor not available: ")
        health = client.get("/health").json()
        assert health["video_predictor_loaded"] is False and health["video_predictor_error"]
        assert tracking.sessions == {}  # the reserved slot was given back
    finally:
        tracking.predictor, tracking.predictor_error = built, None


# ---------------------------------------------------------------- a real session (needs the predictor)


def test_session_lifecycle(client, video, frame_folder):
    r = client.post("/track/start", json={"video_path": str(video), "session_id": "pan"})
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["session_id"] == "pan" and info["num_frames"] == 6
    assert (info["width"], info["height"]) == (96, 96)
    assert client.get("/health").json()["video_predictor_loaded"] is True
    # The video predictor tracks with the image model's own weights: no second copy in memory.
    state = client.app.state
    assert state.tracking.predictor.model is state.models.model

    assert_error(client.post("/track/start", json={"video_path": str(video), "session_id": "pan"}), 409, "session_id")
    # Propagating before any prompt is the wrong state.
    assert_error(client.post("/track/propagate", json={"session_id": "pan", "direction": "forward"}), 409, "session_id")

    # Points without obj_id are object 1; labels default to 1.
    r = client.post("/track/prompt", json={"session_id": "pan", "frame_idx": 0, "points": [[48, 40]]})
    assert r.status_code == 200, r.text
    frame = r.json()
    assert frame["frame_idx"] == 0 and frame["num_objects"] == len(frame["object_ids"])
    assert set(frame["object_ids"]) <= {1}  # random weights may give an empty (dropped) mask
    assert len(frame["masks"]) == len(frame["boxes"]) == len(frame["scores"]) == frame["num_objects"]
    for b64 in frame["masks"]:
        assert decode_mask(base64.b64decode(b64)).shape == (96, 96)

    assert_error(
        client.post("/track/prompt", json={"session_id": "pan", "frame_idx": 6, "text": "a"}), 400, "frame_idx"
    )
    r = client.post("/track/prompt", json={"session_id": "pan", "frame_idx": 0, "points": [[1, 1]], "labels": [1, 0]})
    assert_error(r, 400, "labels")
    r = client.post("/track/prompt", json={"session_id": "pan", "frame_idx": 0})
    assert_error(r, 400, "text")

    r = client.post("/track/propagate", json={"session_id": "pan", "direction": "forward", "start_frame": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    indices = [f["frame_idx"] for f in body["frames"]]
    assert indices == sorted(indices) and body["num_frames_processed"] == len(indices) == 6

    r = client.post(
        "/track/propagate", json={"session_id": "pan", "direction": "forward", "start_frame": 0, "max_frames": 2}
    )
    assert r.status_code == 200 and 1 <= r.json()["num_frames_processed"] <= 3

    assert client.post("/track/stop", json={"session_id": "pan"}).json()["closed"] is True
    assert client.post("/track/stop", json={"session_id": "pan"}).json()["closed"] is False
    assert_error(
        client.post("/track/prompt", json={"session_id": "pan", "frame_idx": 0, "text": "a"}), 404, "session_id"
    )


def test_corrupt_later_frame_is_400(client, media_root, astronaut):
    # Opening reads only the first frame; frames are decoded when needed, and a broken one is a 400 then.
    folder = media_root / "late_break"
    folder.mkdir(exist_ok=True)
    Image.fromarray(astronaut[:64, :64]).save(folder / "0.jpg")
    (folder / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    r = client.post("/track/start", json={"video_path": str(folder), "session_id": "late"})
    assert r.status_code == 200, r.text
    r = client.post("/track/prompt", json={"session_id": "late", "frame_idx": 1, "points": [[5, 5]]})
    assert_error(r, 400, "video_path")
    assert client.post("/track/stop", json={"session_id": "late"}).json()["closed"] is True
    assert client.app.state.tracking.sessions == {}


def test_session_cap_is_429_with_retry_after(client, frame_folder):
    ids = []
    try:
        for _ in range(2):  # the test app allows 2 sessions
            r = client.post("/track/start", json={"video_path": str(frame_folder)})
            assert r.status_code == 200, r.text
            ids.append(r.json()["session_id"])
        r = client.post("/track/start", json={"video_path": str(frame_folder)})
        assert_error(r, 429, "SAM_MAX_SESSIONS")
        assert int(r.headers["retry-after"]) >= 1
    finally:
        for sid in ids:
            client.post("/track/stop", json={"session_id": sid})


def test_idle_sessions_expire(client, frame_folder):
    tracking = client.app.state.tracking
    r = client.post("/track/start", json={"video_path": str(frame_folder), "session_id": "old"})
    assert r.status_code == 200, r.text
    tracking.sessions["old"].last_used = time.monotonic() - tracking.settings.session_ttl_s - 1
    r = client.post("/track/prompt", json={"session_id": "old", "frame_idx": 0, "text": "face"})
    assert_error(r, 404, "session_id")
    assert "old" not in tracking.sessions


def test_frame_results_are_encoded_as_the_contract_says():
    import numpy as np

    from sam3.inference.video_state import FrameResult
    from server.services.video_sessions import frame_to_wire

    masks = np.zeros((2, 6, 8), bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 4:6, 0:2] = True
    result = FrameResult(
        frame_idx=3,
        obj_ids=np.array([1, 7]),
        scores=np.array([1.0, 0.8], np.float32),
        boxes_xyxy=np.array([[2, 1, 4, 2], [0, 4, 1, 5]], np.float32),
        masks=masks,
    )
    wire = frame_to_wire(result, "png")
    assert wire["frame_idx"] == 3 and wire["object_ids"] == [1, 7]
    assert wire["scores"] == pytest.approx([1.0, 0.8])
    assert wire["boxes"] == [[2, 1, 4, 2], [0, 4, 1, 5]]
    for b64, expected in zip(wire["masks"], masks):
        np.testing.assert_array_equal(decode_mask(base64.b64decode(b64)) > 0, expected)
    from server.mask_codec import rle_to_mask

    rle = frame_to_wire(result, "rle")
    assert {k: v for k, v in rle.items() if k != "masks"} == {k: v for k, v in wire.items() if k != "masks"}
    for coded, expected in zip(rle["masks"], masks):
        assert coded["size"] == [6, 8] and isinstance(coded["counts"], str)
        np.testing.assert_array_equal(rle_to_mask(coded), expected)


def _clicked_and_propagated(client, video, session_id: str):
    """A session on ``video`` with one click on frame 0, propagated forward: the propagate answer."""
    r = client.post("/track/start", json={"video_path": str(video), "session_id": session_id})
    assert r.status_code == 200, r.text
    r = client.post("/track/prompt", json={"session_id": session_id, "frame_idx": 0, "points": [[48, 40]]})
    assert r.status_code == 200, r.text
    return client.post("/track/propagate", json={"session_id": session_id, "direction": "forward", "start_frame": 0})


def test_the_frame_after_next_is_decoded_ahead_while_the_model_computes(client, video, monkeypatch):
    """Each step finds its frames decoded: frame t + 2 is decoded on the decode-ahead thread during step t, and
    every frame of the video is decoded once."""
    from sam3.inference.video_predictor import VideoPredictor
    from server.services.tracking_service import DECODE_AHEAD_THREAD

    calls: list[tuple[str, tuple[int, ...]]] = []
    prefetch = VideoPredictor.prefetch

    def recorded(self, session, frames):
        calls.append((threading.current_thread().name, tuple(frames)))
        return prefetch(self, session, frames)

    monkeypatch.setattr(VideoPredictor, "prefetch", recorded)
    try:
        r = _clicked_and_propagated(client, video, "ahead")
        assert r.status_code == 200 and r.json()["num_frames_processed"] == 6, r.text
        ahead = [frames for name, frames in calls if name.startswith(DECODE_AHEAD_THREAD)]
        assert ahead == [(t,) for t in range(2, 6)]
        session = client.app.state.tracking.get("ahead")
        assert session.video.video.decoded == 6  # each frame once: the step-time prefetch found them cached
    finally:
        client.post("/track/stop", json={"session_id": "ahead"})


def test_a_frame_is_encoded_while_the_next_frame_computes(client, video, monkeypatch):
    """Each frame's encoding for the wire waits for the next step to start (it would wait in vain if encoding
    came before that step), and the stream still carries every frame once, in order."""
    import server.services.tracking_service as tracking
    from sam3.inference.propagation import Propagation

    started, changed, overlapped = set(), threading.Condition(), []
    to_wire, step = tracking._to_wire, Propagation.step

    def slow_to_wire(results, mask_format):
        after = max(r.frame_idx for r in results) + 1  # the step that computes the next frame
        with changed:
            overlapped.append(changed.wait_for(lambda: after in started, timeout=30))
        return to_wire(results, mask_format)

    def signalled_step(self):
        with changed:
            started.add(self.next_frame)
            changed.notify_all()
        return step(self)

    monkeypatch.setattr(tracking, "_to_wire", slow_to_wire)
    monkeypatch.setattr(Propagation, "step", signalled_step)
    try:
        r = _clicked_and_propagated(client, video, "overlap")
        assert r.status_code == 200, r.text
        assert [f["frame_idx"] for f in r.json()["frames"]] == list(range(6))
        assert overlapped == [True] * 5  # frames 0..4 encoded during steps 1..5; the last one after the loop
    finally:
        client.post("/track/stop", json={"session_id": "overlap"})


def test_an_error_mid_stream_comes_after_the_frames_computed_before_it(client, video, monkeypatch):
    """Frames are sent one step late (their encoding overlaps the next step): a step that fails still lets the
    frames computed before it reach the reader, then the error line."""
    import json

    from sam3.inference.propagation import Propagation

    step = Propagation.step

    def failing_step(self):
        if self.next_frame == 3:
            raise ValueError("frame 3 is unreadable (injected)")
        return step(self)

    monkeypatch.setattr(Propagation, "step", failing_step)
    r = client.post("/track/start", json={"video_path": str(video), "session_id": "midway"})
    assert r.status_code == 200, r.text
    try:
        r = client.post("/track/prompt", json={"session_id": "midway", "frame_idx": 0, "points": [[48, 40]]})
        assert r.status_code == 200, r.text
        body = {"session_id": "midway", "direction": "forward", "start_frame": 0, "stream": True}
        lines = [json.loads(line) for line in client.post("/track/propagate", json=body).text.splitlines()]
        assert [e["event"] for e in lines] == ["start", "frame", "frame", "frame", "error"]
        assert [e["frame_idx"] for e in lines[1:4]] == [0, 1, 2]
        assert lines[-1]["status"] == 409 and "frame 3 is unreadable" in lines[-1]["detail"]
    finally:
        client.post("/track/stop", json={"session_id": "midway"})
