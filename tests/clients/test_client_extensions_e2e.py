"""The clients' side of the second round's extensions (contract, "Extensions") against the real service
(uvicorn, tiny preset): image_id and refining clicks, several prompts, selected-object merging, RLE masks,
streamed propagation with progress, stored frames, remove/reset/cancel, and the router streaming a real
propagation through."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from milimo_clients import AsyncTrackingManager, InpaintingManager, SamServiceError, TrackingManager, mask_array
from tests.clients import scripted_server as s
from tests.clients.test_router import backend_app
from tests.server.media import moving_crops, write_video


@pytest.fixture(scope="module")
def photo(tmp_path_factory, coffee):
    path = tmp_path_factory.mktemp("ext") / "coffee.png"
    Image.fromarray(coffee[:200, :260]).save(path)
    return path


def backbone_runs(url: str) -> int:
    return httpx.get(f"{url}/health").json()["backbone_runs"]


def test_image_id_clicks_and_refinement(live_server, photo):
    with InpaintingManager(live_server.url) as sam:
        first = sam.predict_mask(photo, [[130, 100]], object_id="cup")
        assert first.image_id and first.mask_array().shape == (200, 260)
        runs = backbone_runs(live_server.url)
        again = sam.predict_mask(image_id=first.image_id, points=[[130, 100]])
        assert again.png == first.png and again.image_id == first.image_id
        refined = sam.refine_mask(first.image_id, "cup", [[130, 100], [20, 20]], [1, 0])
        assert refined.refined is True and refined.image_id == first.image_id
        assert backbone_runs(live_server.url) == runs  # no upload, no second backbone run
        with_logits = sam.predict_mask(image_id=first.image_id, points=[[130, 100]], return_logits=True)
        (logits, *_) = with_logits.logits_arrays()
        assert logits.dtype == np.float32 and logits.ndim == 2
        with pytest.raises(SamServiceError) as err:
            sam.predict_mask(image_id="0" * 32, points=[[1, 1]])
        assert err.value.status_code == 404 and str(err.value).startswith("image_id")


def test_several_prompts_selected_merge_and_rle(live_server, photo, tmp_path):
    with InpaintingManager(live_server.url) as sam:
        found = sam.detect_objects(photo, texts=["a cup", "a plate"], confidence=0.0)
        assert found.count > 0 and {o.prompt_index for o in found.objects} <= {0, 1}
        assert [p["index"] for p in found.prompts] == [0, 1]
        as_rle = sam.detect_objects(
            image_id=found.image_id, texts=["a cup", "a plate"], confidence=0.0, mask_format="rle"
        )
        assert all(isinstance(o.mask, dict) for o in as_rle.objects) and len(as_rle.objects) == len(found.objects)
        for png_obj, rle_obj in zip(found.objects, as_rle.objects):
            np.testing.assert_array_equal(png_obj.mask_array(), rle_obj.mask_array())
        chosen = [0, len(found.objects) - 1]
        path = sam.merge_selected(
            None,
            None,
            chosen,
            confidence=0.0,
            texts=["a cup", "a plate"],
            image_id=found.image_id,
            output_path=tmp_path / "sel.png",
        )
        merged = np.asarray(Image.open(path)) > 127
        expected = np.logical_or.reduce([found.objects[i].mask_array() for i in chosen])
        np.testing.assert_array_equal(merged, expected)


def test_streamed_propagation_frames_progress_and_stored_results(live_server, astronaut, tmp_path):
    video = write_video(live_server.media_root / "stream.mp4", moving_crops(astronaut, 5))
    with TrackingManager(live_server.url) as tracker:
        tracker.start_session(video, session_id="streamed")
        tracker.add_prompt("streamed", 0, points=[[48, 48]], obj_id=1)
        progress = []
        with tracker.propagate_stream(
            "streamed", "forward", on_progress=lambda d, t: progress.append((d, t))
        ) as stream:
            streamed = list(stream)
        assert progress == [(k, 5) for k in range(1, 6)] and stream.num_frames_processed == 5 and not stream.cancelled
        stored = tracker.get_frames("streamed")
        assert [f.frame_idx for f in stored] == [f.frame_idx for f in streamed] == list(range(5))
        as_rle = tracker.get_frames("streamed", mask_format="rle")
        for png_frame, rle_frame in zip(stored, as_rle):
            assert png_frame.object_ids == rle_frame.object_ids
            for k in range(png_frame.num_objects):
                np.testing.assert_array_equal(mask_array(png_frame.masks[k]), rle_frame.mask_array(k))
        TrackingManager.save_results("streamed", as_rle, tmp_path / "rle")
        TrackingManager.save_results("streamed", stored, tmp_path / "png")
        for png in sorted((tmp_path / "png" / "masks").iterdir()):
            assert (tmp_path / "rle" / "masks" / png.name).read_bytes() == png.read_bytes()
        assert tracker.cancel("streamed") is False  # nothing running
        assert tracker.remove_object("streamed", 1) is True
        assert tracker.remove_object("streamed", 1) is False
        assert tracker.reset("streamed") is True
        assert tracker.stop_session("streamed") is True


def test_async_stream_matches_sync_and_router_streams_the_real_service(live_server, astronaut, tmp_path):
    video = write_video(live_server.media_root / "stream2.mp4", moving_crops(astronaut, 4))

    async def run():
        async with AsyncTrackingManager(live_server.url) as tracker:
            await tracker.start_session(video, session_id="astream")
            await tracker.add_prompt("astream", 0, points=[[48, 48]], obj_id=1)
            frames = [f async for f in tracker.propagate_stream("astream", "forward")]
            plain = await tracker.get_frames("astream")
            await tracker.stop_session("astream")
            return frames, plain

    frames, plain = asyncio.run(run())
    assert frames == plain and len(frames) == 4

    backend = s.ThreadedUvicorn(backend_app(live_server.url, tmp_path)).start()
    try:
        for base, sid in ((live_server.url, "d"), (backend.url, "p")):
            httpx.post(
                f"{base}/track/start", json={"video_path": str(video), "session_id": sid}, timeout=120
            ).raise_for_status()
            httpx.post(
                f"{base}/track/prompt", json={"session_id": sid, "frame_idx": 0, "points": [[48, 48]]}, timeout=120
            ).raise_for_status()
        lines = {}
        for base, sid in ((live_server.url, "d"), (backend.url, "p")):
            with httpx.stream(
                "POST",
                f"{base}/track/propagate",
                json={"session_id": sid, "direction": "forward", "stream": True},
                timeout=120,
            ) as answer:
                assert answer.headers["content-type"].startswith("application/x-ndjson")
                lines[sid] = [json.loads(line.replace('"p"', '"d"')) for line in answer.iter_lines() if line.strip()]
        assert lines["p"] == lines["d"] and lines["d"][-1]["event"] == "end"
        saved = httpx.post(f"{backend.url}/edit/track/save", json={"session_id": "p"}, timeout=120)  # frames fetched
        assert saved.status_code == 200 and saved.json()["num_frames"] == 4, saved.text
        for sid in ("d", "p"):
            httpx.post(f"{live_server.url}/track/stop", json={"session_id": sid})
    finally:
        backend.stop()
