"""How the tracking managers read a streamed propagation (contract, Extensions: NDJSON events) and the
small tracking calls, sync and async, against a scripted server: frames as they arrive, progress, an error
line, a stream cut short, leaving early. (The same calls against the real service: test_e2e_tracking.py.)"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from pycocotools import mask as coco

from milimo_clients import AsyncTrackingManager, SamProtocolError, SamServiceBusy, SamServiceError, TrackingManager
from tests.clients import scripted_server as s


def rle(mask: np.ndarray) -> dict:
    encoded = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


MASK = np.zeros((6, 8), bool)
MASK[1:4, 2:7] = True


def events(n: int, last: dict | None = None) -> list[str]:
    frame = {"object_ids": [4], "scores": [0.7], "masks": [rle(MASK)], "boxes": [[2, 1, 7, 4]]}
    lines = [{"event": "start", "session_id": "s", "total": n}]
    lines += [{"event": "frame", "done": k + 1, "total": n, "frame_idx": k, **frame} for k in range(n)]
    lines.append(last if last is not None else {"event": "end", "num_frames_processed": n, "cancelled": False})
    return [json.dumps(line) for line in lines]


@pytest.fixture(scope="module")
def server():
    srv = s.ScriptedServer().start()
    yield srv
    srv.stop()


def test_sync_stream_yields_frames_as_they_arrive_with_progress(server):
    sent: list[float] = []
    server.script("/track/propagate", s.ndjson(events(3), 0.5, sent))
    progress, arrivals = [], []
    with TrackingManager(server.url) as tracker:
        with tracker.propagate_stream(
            "s", "forward", mask_format="rle", on_progress=lambda d, t: progress.append((d, t))
        ) as stream:
            for frame in stream:
                arrivals.append(time.monotonic())
                np.testing.assert_array_equal(frame.mask_array(0), MASK)
            assert (stream.total, stream.done, stream.num_frames_processed, stream.cancelled) == (3, 3, 3, False)
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert arrivals[0] < sent[-1]  # the first frame was in hand before the server sent the last line
    body = json.loads(server.hits("/track/propagate")[0].body)
    assert body == {"session_id": "s", "direction": "forward", "max_frames": -1, "mask_format": "rle", "stream": True}


def test_async_stream_and_early_exit_disconnects(server):
    sent: list[float] = []
    server.script("/track/propagate", s.ndjson(events(5), 1.0, sent))

    async def run():
        async with AsyncTrackingManager(server.url) as tracker:
            stream = tracker.propagate_stream("s")
            async for frame in stream:
                first = frame
                break
            await stream.aclose()
            await asyncio.sleep(2.5)
            return first

    first = asyncio.run(run())
    assert first.frame_idx == 0 and first.object_ids == [4]
    assert len(sent) < 7  # the server stopped sending: the client went away


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_error_line_and_cut_stream_raise(server, kind):
    def collect(lines):
        server.script("/track/propagate", s.ndjson(lines, 0.01))
        if kind == "sync":
            with TrackingManager(server.url) as tracker:
                return list(tracker.propagate_stream("s"))

        async def run():
            async with AsyncTrackingManager(server.url) as tracker:
                return [f async for f in tracker.propagate_stream("s")]

        return asyncio.run(run())

    with pytest.raises(SamServiceBusy, match="queue: full"):
        collect(events(2, {"event": "error", "status": 429, "detail": "queue: full"}))
    with pytest.raises(SamServiceError) as err:
        collect(events(2, {"event": "error", "status": 404, "detail": "session_id: gone"}))
    assert err.value.status_code == 404
    with pytest.raises(SamProtocolError, match="ended before its last line"):
        collect(events(2)[:-1])
    with pytest.raises(SamProtocolError, match="not JSON"):
        collect(["<html>"])
    server.script("/track/propagate", s.json_answer('{"detail": "session_id: unknown session \'s\'"}', 404))
    with TrackingManager(server.url) as tracker:
        with pytest.raises(SamServiceError) as err:
            list(tracker.propagate_stream("s"))
    assert err.value.status_code == 404 and str(err.value) == "session_id: unknown session 's'"


def test_small_tracking_calls_send_the_contract_bodies(server):
    server.script("/track/cancel", s.json_answer('{"session_id": "s", "cancelled": true}'))
    server.script("/track/frames", s.json_answer(json.dumps({"session_id": "s", "frames": [json.loads(events(1)[1])]})))
    server.script("/track/remove_object", s.json_answer('{"session_id": "s", "removed": false}'))
    server.script("/track/reset", s.json_answer('{"session_id": "s", "reset": true}'))
    with TrackingManager(server.url) as tracker:
        assert tracker.cancel("s") is True
        (frame,) = tracker.get_frames("s", 0, 4, mask_format="rle")
        assert tracker.remove_object("s", 4) is False
        assert tracker.reset("s") is True
    np.testing.assert_array_equal(frame.mask_array(0), MASK)
    sent = {
        path: json.loads(server.hits(path)[0].body)
        for path in ("/track/cancel", "/track/frames", "/track/remove_object", "/track/reset")
    }
    assert sent == {
        "/track/cancel": {"session_id": "s"},
        "/track/frames": {"session_id": "s", "start": 0, "end": 4, "mask_format": "rle"},
        "/track/remove_object": {"session_id": "s", "obj_id": 4},
        "/track/reset": {"session_id": "s"},
    }
