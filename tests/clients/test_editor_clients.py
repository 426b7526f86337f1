"""The editor's calls in ``TrackingManager`` and ``AsyncTrackingManager`` over real HTTP to a real uvicorn
process: ``upload_media``, ``export`` (three formats), ``list_sessions``, ``heartbeat``, and the
``removed_objects`` of a propagation."""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections.abc import Iterator

import numpy as np
import pytest

from milimo_clients import AsyncTrackingManager, SamServiceError, TrackingManager
from tests.clients.conftest import LiveServer, start_server, stop_server
from tests.server.media import write_video
from tests.server.test_editor_routes import frames_zip, truck_frames


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("editor_clients"), {"SAM3_PRECISION": "fp32", "SAM_MAX_SESSIONS": "3"})
    yield live
    stop_server(live)


def test_sync_upload_track_export_and_sessions(server, astronaut, tmp_path):
    with TrackingManager(server.url) as tracker:
        media = tracker.upload_media(frames_zip(truck_frames(astronaut)), "truck.zip")
        assert media.num_frames == 12 and (media.width, media.height) == (160, 160)
        session = tracker.start_session(media.video_path)
        beat = tracker.heartbeat(session.session_id)
        assert 0 < beat <= 120
        listed = {s.session_id: s for s in tracker.list_sessions()}
        assert listed[session.session_id].video_path == media.video_path
        assert listed[session.session_id].frames_computed == 0

        assert tracker.add_prompt(session.session_id, 0, text="truck").object_ids == [0]
        result = tracker.propagate(session.session_id, "forward", 0)
        assert [r["rule"] for r in result.removed_objects] == ["hotstart_unmatched"]
        assert result.removed_objects[0]["obj_id"] == 0

        out = tmp_path / "exports"
        out.mkdir()
        written = {fmt: tracker.export(session.session_id, fmt, out) for fmt in ("png_zip", "rle_json", "matte_mp4")}
        with zipfile.ZipFile(written["png_zip"]) as archive:
            assert archive.namelist() and all(n.endswith(".png") for n in archive.namelist())
        rle = json.loads(open(written["rle_json"]).read())
        assert rle["video_hw"] == [160, 160] and len(rle["frames"]) == 12
        named = tmp_path / "one.mp4"
        assert tracker.export(session.session_id, "matte_mp4", named, obj_ids=[1], start=9) == str(named)
        assert named.stat().st_size > 0
        with pytest.raises(ValueError, match="format"):
            tracker.export(session.session_id, "gif", out)
        with pytest.raises(SamServiceError, match="obj_ids"):
            tracker.export(session.session_id, "png_zip", out, obj_ids=[99])
        tracker.stop_session(session.session_id)
        with pytest.raises(SamServiceError, match="session_id"):
            tracker.heartbeat(session.session_id)


def test_async_manager_has_the_same_calls(server, astronaut, tmp_path):
    clip = tmp_path / "clip.mp4"
    write_video(clip, [np.ascontiguousarray(f[:64, :64]) for f in truck_frames(astronaut, 4)])

    async def run():
        async with AsyncTrackingManager(server.url) as tracker:
            media = await tracker.upload_media(clip)
            assert media.num_frames == 4 and media.video_path.endswith("_clip.mp4")
            session = await tracker.start_session(media.video_path)
            await tracker.heartbeat(session.session_id)
            await tracker.add_prompt(session.session_id, 0, points=[[30, 30]], obj_id=1)
            await tracker.propagate(session.session_id, "forward", 0)
            assert session.session_id in {s.session_id for s in await tracker.list_sessions()}
            path = await tracker.export(session.session_id, "png_zip", tmp_path / "masks.zip")
            with zipfile.ZipFile(path) as archive:
                assert sorted(archive.namelist()) == [f"1/{t:05d}.png" for t in range(4)]
            await tracker.stop_session(session.session_id)

    asyncio.run(run())
