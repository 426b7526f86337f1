"""/track/* JSON bodies are strict: a wrong JSON type is a 422 naming the field, as the README promises."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/track/prompt", {"session_id": "s", "frame_idx": "0", "text": "a cup"}, "frame_idx"),
        ("/track/prompt", {"session_id": "s", "frame_idx": 0.0, "text": "a cup"}, "frame_idx"),
        ("/track/prompt", {"session_id": "s", "frame_idx": True, "text": "a cup"}, "frame_idx"),
        ("/track/prompt", {"session_id": "s", "frame_idx": 0, "points": [[1, 2]], "obj_id": "1"}, "obj_id"),
        ("/track/prompt", {"session_id": 5, "frame_idx": 0, "text": "a cup"}, "session_id"),
        ("/track/propagate", {"session_id": "s", "max_frames": "3"}, "max_frames"),
        ("/track/propagate", {"session_id": "s", "start_frame": "1"}, "start_frame"),
        ("/track/start", {"video_path": 7}, "video_path"),
        ("/track/stop", {"session_id": ["s"]}, "session_id"),
    ],
)
def test_wrong_json_types_are_422(client, path, body, field):
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]


def test_right_types_still_pass_validation(client):
    # An unknown session gets past validation to the 404 (the body itself was accepted).
    response = client.post("/track/prompt", json={"session_id": "nosuch", "frame_idx": 0, "text": "a cup"})
    assert response.status_code == 404, response.text
