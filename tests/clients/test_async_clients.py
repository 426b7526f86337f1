"""The async managers give what the sync ones give, over real HTTP to the real service (tiny preset), and
image inputs as a path, bytes, a file object or a PIL image are the same image to the service."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from milimo_clients import (
    AsyncInpaintingManager,
    AsyncTrackingManager,
    InpaintingManager,
    SamServiceError,
    TrackingManager,
)
from tests.server.media import moving_crops, write_video


@pytest.fixture(scope="module")
def photo(tmp_path_factory, coffee):
    path = tmp_path_factory.mktemp("photo") / "coffee.png"
    Image.fromarray(coffee[:180, :240]).save(path)
    return path


def inputs(path):
    """The same picture four ways (each a maker: a file object is used up by one call)."""
    return {
        "path": lambda: path,
        "bytes": lambda: path.read_bytes(),
        "file": lambda: io.BytesIO(path.read_bytes()),
        "pil": lambda: Image.open(path).convert("RGB"),
    }


def test_every_input_kind_gives_the_same_masks_sync_and_async(live_server, photo, tmp_path):
    sync_results, async_results = {}, {}
    with InpaintingManager(live_server.url, output_dir=tmp_path / "sync") as sam:
        for kind, image in inputs(photo).items():
            sync_results[kind] = (
                open(sam.get_mask_from_sam(image(), [[120, 90]]), "rb").read(),
                sam.detect_objects(image(), "a cup", confidence=0.0),
            )

    async def run():
        async with AsyncInpaintingManager(live_server.url, output_dir=tmp_path / "async") as sam:
            for kind, image in inputs(photo).items():
                path = await sam.get_mask_from_sam(image(), [[120, 90]])
                async_results[kind] = (
                    open(path, "rb").read(),
                    await sam.detect_objects(image(), "a cup", confidence=0.0),
                )

    asyncio.run(run())
    reference_mask, reference_detection = sync_results["path"]
    assert reference_mask.startswith(b"\x89PNG") and reference_detection.count > 0
    for kind in ("path", "bytes", "file", "pil"):
        for results in (sync_results, async_results):
            mask, detection = results[kind]
            assert mask == reference_mask, kind
            assert [(o.mask, o.bbox, o.score, o.label) for o in detection.objects] == [
                (o.mask, o.bbox, o.score, o.label) for o in reference_detection.objects
            ], kind
    # Default output: the documented folder, named after the input and the request, not a temp file.
    saved = sorted(p.name for p in (tmp_path / "sync").iterdir())
    assert saved == sorted(p.name for p in (tmp_path / "async").iterdir())
    assert any(name.startswith("coffee_mask_") for name in saved) and any(
        name.startswith("image_mask_") for name in saved
    )


def test_text_mask_and_errors_are_the_same_sync_and_async(live_server, photo, tmp_path):
    with InpaintingManager(live_server.url) as sam:
        sync_mask = open(sam.get_mask_from_text(photo, "a cup", 0.0, tmp_path / "s.png"), "rb").read()
        with pytest.raises(SamServiceError) as sync_err:
            sam.get_mask_from_sam(photo, [[5000, 5]])

    async def run():
        async with AsyncInpaintingManager(live_server.url) as sam:
            mask = open(await sam.get_mask_from_text(photo, "a cup", 0.0, tmp_path / "a.png"), "rb").read()
            with pytest.raises(SamServiceError) as err:
                await sam.get_mask_from_sam(photo, [[5000, 5]])
            return mask, err.value, await sam.health()

    async_mask, async_err, health = asyncio.run(run())
    assert async_mask == sync_mask
    assert (type(async_err), async_err.status_code, str(async_err)) == (
        type(sync_err.value),
        sync_err.value.status_code,
        str(sync_err.value),
    )
    assert sync_err.value.status_code == 400 and str(sync_err.value).startswith("points")
    assert health["status"] == "running"


def test_tracking_sync_and_async_give_the_same_results(live_server, astronaut):
    video = write_video(live_server.media_root / "twins.mp4", moving_crops(astronaut, 4))

    def sync_flow():
        with TrackingManager(live_server.url) as tracker:
            session = tracker.start_session(video, session_id="sync-twin")
            prompt = tracker.add_prompt("sync-twin", 1, points=[[40, 50]], obj_id=2)
            result = tracker.propagate("sync-twin", direction="both", start_frame=1)
            return session, prompt, result, tracker.stop_session("sync-twin")

    async def async_flow():
        async with AsyncTrackingManager(live_server.url) as tracker:
            session = await tracker.start_session(video, session_id="async-twin")
            prompt = await tracker.add_prompt("async-twin", 1, points=[[40, 50]], obj_id=2)
            result = await tracker.propagate("async-twin", direction="both", start_frame=1)
            return session, prompt, result, await tracker.stop_session("async-twin")

    s_session, s_prompt, s_result, s_stopped = sync_flow()
    a_session, a_prompt, a_result, a_stopped = asyncio.run(async_flow())
    assert (
        (s_session.num_frames, s_session.width, s_session.height)
        == (a_session.num_frames, a_session.width, a_session.height)
        == (4, 96, 96)
    )
    assert s_prompt == a_prompt and s_prompt.frame_idx == 1  # (random weights may keep no object)
    assert s_result.frames == a_result.frames and len(s_result.frames) == 4
    assert s_stopped is a_stopped is True


def test_image_id_or_image_exactly_one(live_server, photo):
    with InpaintingManager(live_server.url) as sam:
        with pytest.raises(SamServiceError, match="image: give either"):
            sam.detect_objects(None, "cup")
        with pytest.raises(SamServiceError, match="image: give either"):
            sam.detect_objects(photo, "cup", image_id="abc")
        with pytest.raises(SamServiceError, match="image: expected a path"):
            sam.detect_objects(12345, "cup")
        with pytest.raises(SamServiceError, match="binary mode"):
            sam.detect_objects(io.StringIO("text"), "cup")
