"""Video tracking end to end: a real uvicorn process driven by ``TrackingManager`` over HTTP, on a
generated mp4 (tiny preset, random weights: the masks mean nothing, the workflow and the contract do)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from milimo_clients import TrackingManager
from tests.server.media import moving_crops, write_video
from tests.live_server import rss_mb


def test_text_then_click_then_both_directions_then_export(live_server, astronaut, tmp_path):
    video = write_video(live_server.media_root / "walk.mp4", moving_crops(astronaut, 6))
    with TrackingManager(live_server.url) as tracker:
        session = tracker.start_session(video, session_id="flow")
        assert (session.num_frames, session.width, session.height) == (6, 96, 96)

        text = tracker.add_prompt("flow", 2, text="a person")
        assert text.frame_idx == 2
        detected = set(text.object_ids)
        click = tracker.add_prompt("flow", 2, points=[[70, 30], [20, 80]], labels=[1, 0], obj_id=50)
        assert click.frame_idx == 2
        assert set(click.object_ids) <= detected | {50}

        result = tracker.propagate("flow", direction="both", start_frame=2)
        indices = [f.frame_idx for f in result.frames]
        assert indices == sorted(indices) and set(indices) == set(range(6))
        assert result.num_frames_processed == len(result.frames)
        known = detected | {50}
        for frame in result.frames:
            assert len(frame.object_ids) == len(frame.masks) == len(frame.scores) == len(frame.boxes)
            # an object the detector finds during the propagation takes the next id after the largest so far
            assert all(i in known or i > max(known) for i in frame.object_ids), (frame.object_ids, known)

        manifest_path = tracker.save_results("flow", result.frames, tmp_path / "export")
        manifest = json.loads(Path(manifest_path).read_text())
        assert manifest["session_id"] == "flow" and manifest["num_frames"] == 6
        written = sorted(p.name for p in (tmp_path / "export" / "masks").glob("*.png"))
        expected = sorted(f"{f.frame_idx}_{o}.png" for f in result.frames for o in f.object_ids)
        assert written == expected
        for name in written:
            mask = np.asarray(Image.open(tmp_path / "export" / "masks" / name))
            assert mask.shape == (96, 96) and set(np.unique(mask)) <= {0, 255}

        assert tracker.stop_session("flow") is True
        assert tracker.stop_session("flow") is False
    assert httpx.get(f"{live_server.url}/health").json()["status"] == "running"


def test_repeated_sessions_do_not_grow_memory(live_server, astronaut):
    video = write_video(live_server.media_root / "short.mp4", moving_crops(astronaut, 3, step=10))
    pid = live_server.process.pid

    def cycle(k: int) -> None:
        sid = f"cycle{k}"
        tracker.start_session(video, session_id=sid)
        tracker.add_prompt(sid, 0, points=[[48, 48]])
        tracker.propagate(sid, direction="forward", start_frame=0)
        assert tracker.stop_session(sid) is True

    with TrackingManager(live_server.url) as tracker:
        for k in range(3):  # warm-up: the video predictor is built lazily, allocators settle
            cycle(k)
        before = rss_mb(pid)
        for k in range(3, 23):
            cycle(k)
        after = rss_mb(pid)
    growth = (after - before) / before
    print(f"server RSS {before:.1f} MB -> {after:.1f} MB after 20 cycles ({growth:+.2%})")
    assert growth < 0.05
