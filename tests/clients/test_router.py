"""The backend's routes (description 5.4) from ``create_sam_router``: a real backend app (FastAPI + the
router, under uvicorn) in front of the real SAM service (uvicorn subprocess, tiny preset) or, where the
service cannot be made to do something on demand, a scripted server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from milimo_clients import RetryPolicy
from milimo_clients.fastapi_router import create_sam_router
from tests.clients import scripted_server as s
from tests.server.media import moving_crops, write_video

PASSED = ("content-type", "x-mask-score", "x-object-count", "x-image-id", "x-refined", "retry-after")


def backend_app(service_url: str, export_root: Path, **options) -> FastAPI:
    app = FastAPI()
    app.include_router(create_sam_router(service_url, export_root=export_root, **{"timeout": 120, **options}))

    @app.get("/health")
    async def health() -> dict:
        return {"backend": "ok"}

    return app


@pytest.fixture(scope="module")
def backend(live_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("backend")
    server = s.ThreadedUvicorn(backend_app(live_server.url, root)).start()
    server.export_root = root
    yield server
    server.stop()


@pytest.fixture()
def scripted():
    srv = s.ScriptedServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def photo(coffee) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    Image.fromarray(coffee[:160, :200]).save(buffer, format="PNG")
    return buffer.getvalue()


def same_answer(direct: httpx.Response, proxied: httpx.Response) -> None:
    assert proxied.status_code == direct.status_code, (proxied.status_code, proxied.text[:300])
    for name in PASSED:
        assert proxied.headers.get(name) == direct.headers.get(name), name
    assert proxied.content == direct.content


IMAGE_CASES = [
    ("/edit/segment", "/predict/mask", {"points": "[[100, 80]]"}),
    ("/edit/segment", "/predict/mask", {"points": "[[100, 80], [10, 10]]", "labels": "[1, 0]", "multimask": "true"}),
    ("/edit/detect", "/detect", {"text": "a cup", "confidence": "0.0"}),
    ("/edit/segment-text", "/segment/text", {"text": "a cup", "confidence": "0.0"}),
    ("/edit/segment", "/predict/mask", {"points": "[[100]]"}),  # 400 from the service
    ("/edit/detect", "/detect", {"text": "a cup", "confidence": "7"}),  # 422 from the service
]


@pytest.mark.parametrize("case", range(len(IMAGE_CASES)))
def test_image_routes_answer_what_the_service_answers(live_server, backend, photo, case):
    backend_path, service_path, fields = IMAGE_CASES[case]
    files = {"image": ("frame.png", photo, "image/png")}
    direct = httpx.post(f"{live_server.url}{service_path}", files=files, data=fields, timeout=120)
    proxied = httpx.post(f"{backend.url}{backend_path}", files=files, data=fields, timeout=120)
    same_answer(direct, proxied)
    if direct.status_code >= 400:
        assert set(proxied.json()) == {"detail"} and proxied.json()["detail"]


def test_missing_image_keeps_the_services_422(live_server, backend):
    direct = httpx.post(f"{live_server.url}/detect", data={"text": "cup"})
    proxied = httpx.post(f"{backend.url}/edit/detect", data={"text": "cup"})
    same_answer(direct, proxied)
    assert proxied.status_code == 422 and proxied.json()["detail"].startswith("image")


def test_upload_bytes_pass_through_unchanged(scripted, tmp_path):
    backend = s.ThreadedUvicorn(backend_app(scripted.url, tmp_path)).start()
    try:
        scripted.script("/predict/mask", s.png)
        payload = os.urandom(300_000) + b"\r\n--boundary\r\n\x00"  # arbitrary bytes, multipart-looking tail
        answer = httpx.post(
            f"{backend.url}/edit/segment",
            files={"image": ("shot 01.jpg", payload, "image/jpeg")},
            data={"points": "[[1, 2]]", "labels": "[1]", "object_id": "obj-α"},
        )
        assert answer.status_code == 200 and answer.content == s.PNG_1x1
        assert answer.headers["x-mask-score"] == "0.5" and answer.headers["x-image-id"] == "img-1"
        (got,) = scripted.hits("/predict/mask")
        assert got.files["image"] == ("shot 01.jpg", "image/jpeg", hashlib.sha256(payload).hexdigest())
        assert got.fields == {"points": "[[1, 2]]", "labels": "[1]", "object_id": "obj-α"}
    finally:
        backend.stop()


def test_tracking_routes_match_the_service_and_save_writes_the_layout(live_server, backend, astronaut):
    video = write_video(live_server.media_root / "proxy.mp4", moving_crops(astronaut, 4))
    answers = {}
    for base, sid in ((live_server.url, "direct"), (backend.url, "viaproxy")):
        post = lambda path, body, base=base: httpx.post(f"{base}{path}", json=body, timeout=300)
        start = post("/track/start", {"video_path": str(video), "session_id": sid})
        prompt = post("/track/prompt", {"session_id": sid, "frame_idx": 0, "points": [[48, 48]], "obj_id": 3})
        propagate = post("/track/propagate", {"session_id": sid, "direction": "forward"})
        bad = post("/track/prompt", {"session_id": sid, "frame_idx": 99, "points": [[1, 1]]})
        stop = post("/track/stop", {"session_id": sid})
        unknown = post("/track/prompt", {"session_id": "nope", "frame_idx": 0, "text": "x"})
        answers[sid] = [start, prompt, propagate, bad, stop, unknown]
    for direct, proxied in zip(answers["direct"], answers["viaproxy"]):
        assert proxied.status_code == direct.status_code
        assert proxied.headers["content-type"] == direct.headers["content-type"]
        strip = lambda r: json.loads(r.text.replace('"viaproxy"', '"direct"'))  # noqa: E731
        assert strip(proxied) == strip(direct)
    assert [r.status_code for r in answers["direct"]] == [200, 200, 200, 400, 200, 404]

    frames = answers["viaproxy"][2].json()["frames"]
    saved = httpx.post(f"{backend.url}/edit/track/save", json={"session_id": "viaproxy", "frames": frames})
    assert saved.status_code == 200, saved.text
    folder = backend.export_root / "exports" / "tracking" / "viaproxy"
    assert saved.json() == {
        "session_id": "viaproxy",
        "path": "exports/tracking/viaproxy",
        "manifest": "exports/tracking/viaproxy/manifest.json",
        "num_frames": 4,
        "num_masks": sum(len(f["object_ids"]) for f in frames),
    }
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [f["frame_idx"] for f in manifest["frames"]] == [0, 1, 2, 3]
    for frame in frames:
        for obj_id, mask in zip(frame["object_ids"], frame["masks"]):
            path = folder / "masks" / f"{frame['frame_idx']}_{obj_id}.png"
            assert path.read_bytes() == base64.b64decode(mask)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "masks"]


def test_save_refuses_bad_ids_and_anything_outside_the_root(tmp_path, scripted):
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    backend = s.ThreadedUvicorn(backend_app(scripted.url, root)).start()
    png = base64.b64encode(s.PNG_1x1).decode()
    frame = {"frame_idx": 0, "object_ids": [1], "scores": [0.5], "masks": [png], "boxes": [[0, 0, 1, 1]]}
    try:
        save = lambda body: httpx.post(f"{backend.url}/edit/track/save", json=body)  # noqa: E731
        for bad in ("../outside", "..", "a/b", "/etc", ".hidden", "", "x" * 200, "a\\b", "a\x00b", 5, None):
            answer = save({"session_id": bad, "frames": [frame]})
            assert answer.status_code == 422 and answer.json()["detail"].startswith("session_id:"), (bad, answer.text)
        cases = [
            ({**frame, "frame_idx": "../1"}, "frames[0].frame_idx"),
            ({**frame, "frame_idx": -1}, "frames[0].frame_idx"),
            ({**frame, "object_ids": ["1/../../x"]}, "frames[0].object_ids[0]"),
            ({**frame, "masks": ["not base64!"]}, "frames[0].masks[0]: not base64"),
            ({**frame, "masks": [base64.b64encode(b"<svg/>").decode()]}, "frames[0].masks[0]: mask: not a PNG"),
            ({**frame, "masks": [{"size": [2, 2], "counts": [9]}]}, "frames[0].masks[0]: rle:"),
            ({**frame, "masks": []}, "frames[0].masks"),
        ]
        for bad_frame, field in cases:
            answer = save({"session_id": "ok", "frames": [bad_frame]})
            assert answer.status_code == 400 and answer.json()["detail"].startswith(field), (field, answer.text)
        assert save({"session_id": "ok", "frames": [frame], "extra": 1}).json()["detail"] == "extra: unknown field"
        assert (
            httpx.post(f"{backend.url}/edit/track/save", content=b"[").json()["detail"]
            == "body: expected a JSON object"
        )
        # A symlink planted in the export tree does not lead outside it.
        (root / "exports" / "tracking").mkdir(parents=True, exist_ok=True)
        (root / "exports" / "tracking" / "planted").symlink_to(outside, target_is_directory=True)
        answer = save({"session_id": "planted", "frames": [frame]})
        assert answer.status_code == 403 and answer.json()["detail"].startswith("session_id:")
        assert list(outside.iterdir()) == []
        assert sorted(p.name for p in (root / "exports" / "tracking").iterdir()) == ["planted"]
        # A good save, then a second one replaces it (no stale masks), nothing else in the tree.
        assert save({"session_id": "ok", "frames": [frame, {**frame, "frame_idx": 5}]}).status_code == 200
        assert save({"session_id": "ok", "frames": [frame]}).status_code == 200
        assert sorted(p.name for p in (root / "exports" / "tracking" / "ok" / "masks").iterdir()) == ["0_1.png"]
        assert sorted(p.name for p in (root / "exports" / "tracking").iterdir()) == ["ok", "planted"]
        # Without frames the stored results are fetched from the service's /track/frames.
        scripted.script(
            "/track/frames", s.json_answer(json.dumps({"session_id": "ok", "frames": [{**frame, "frame_idx": 2}]}))
        )
        answer = save({"session_id": "ok", "start": 2})
        assert answer.status_code == 200 and answer.json()["num_frames"] == 1
        assert json.loads(scripted.hits("/track/frames")[0].body) == {"session_id": "ok", "start": 2}
        assert (root / "exports" / "tracking" / "ok" / "masks" / "2_1.png").read_bytes() == s.PNG_1x1
        scripted.script("/track/frames", s.json_answer('{"detail": "session_id: unknown session \'gone\'"}', 404))
        answer = save({"session_id": "gone"})
        assert answer.status_code == 404 and answer.json() == {"detail": "session_id: unknown session 'gone'"}
    finally:
        backend.stop()


def test_streamed_propagation_passes_through_as_it_arrives(scripted, tmp_path):
    backend = s.ThreadedUvicorn(backend_app(scripted.url, tmp_path)).start()
    frame = {"frame_idx": 0, "object_ids": [], "scores": [], "masks": [], "boxes": []}
    lines = [json.dumps({"event": "start", "session_id": "s", "total": 3})]
    lines += [json.dumps({"event": "frame", "done": k + 1, "total": 3, **frame, "frame_idx": k}) for k in range(3)]
    lines += [json.dumps({"event": "end", "num_frames_processed": 3, "cancelled": False})]
    try:
        sent: list[float] = []
        scripted.script("/track/propagate", s.ndjson(lines, 0.6, sent))
        received = []
        with httpx.stream(
            "POST", f"{backend.url}/track/propagate", json={"session_id": "s", "stream": True}, timeout=30
        ) as answer:
            assert answer.headers["content-type"].startswith("application/x-ndjson")
            for line in answer.iter_lines():
                received.append((time.monotonic(), json.loads(line)))
        assert [event for _, event in received] == [json.loads(line) for line in lines]
        assert received[0][0] < sent[-1]  # the first line was read before the service sent the last one
        # A caller that goes away makes the backend go away from the service: the rest is never sent.
        sent.clear()
        scripted.script("/track/propagate", s.ndjson(lines, 1.0, sent))
        with httpx.stream(
            "POST", f"{backend.url}/track/propagate", json={"session_id": "s", "stream": True}, timeout=30
        ) as answer:
            next(answer.iter_lines())
        time.sleep(3.0)
        assert 1 <= len(sent) < len(lines), sent
        # Without "stream" the propagation is an ordinary JSON call.
        scripted.script(
            "/track/propagate",
            s.json_answer('{"session_id": "s", "direction": "forward", "num_frames_processed": 0, "frames": []}'),
        )
        assert (
            httpx.post(f"{backend.url}/track/propagate", json={"session_id": "s"}).json()["num_frames_processed"] == 0
        )
    finally:
        backend.stop()


def test_backend_stays_free_while_a_sam_call_is_in_flight(scripted, tmp_path):
    backend = s.ThreadedUvicorn(backend_app(scripted.url, tmp_path)).start()
    scripted.script("/detect", s.slow(4.0, s.json_answer('{"objects": [], "count": 0, "width": 1, "height": 1}')))

    async def run():
        async with httpx.AsyncClient(base_url=backend.url, timeout=30) as http:
            detect = asyncio.create_task(
                http.post("/edit/detect", files={"image": ("a.png", s.PNG_1x1, "image/png")}, data={"text": "x"})
            )
            await asyncio.sleep(0.4)
            start = time.monotonic()
            health = await http.get("/health")
            health_s = time.monotonic() - start
            pending = not detect.done()
            return health, health_s, pending, await detect

    health, health_s, pending, detect = asyncio.run(run())
    backend.stop()
    # a blocked loop would answer /health only after the detect call: it would no longer be pending
    assert health.json() == {"backend": "ok"} and pending, health_s
    assert detect.status_code == 200 and detect.json()["count"] == 0


def test_router_retries_busy_and_reports_an_absent_service(scripted, tmp_path):
    backend = s.ThreadedUvicorn(backend_app(scripted.url, tmp_path)).start()
    try:
        scripted.script("/segment/text", s.busy("1"), s.png)
        start = time.monotonic()
        answer = httpx.post(
            f"{backend.url}/edit/segment-text", files={"image": ("a.png", s.PNG_1x1, "image/png")}, data={"text": "x"}
        )
        assert answer.status_code == 200 and answer.content == s.PNG_1x1 and time.monotonic() - start >= 0.9
        assert len(scripted.hits("/segment/text")) == 2
        scripted.script("/track/start", s.busy("1"))  # not idempotent: the 429 goes back to the caller
        answer = httpx.post(f"{backend.url}/track/start", json={"video_path": "/x"})
        assert (
            answer.status_code == 429
            and answer.headers["retry-after"] == "1"
            and len(scripted.hits("/track/start")) == 1
        )
        assert httpx.post(f"{backend.url}/track/teleport", json={}).status_code == 404
    finally:
        backend.stop()
    policy = RetryPolicy(max_attempts=3, backoff_initial_s=0.05)
    gone = s.ThreadedUvicorn(backend_app(f"http://127.0.0.1:{s.free_port()}", tmp_path, retry=policy)).start()
    try:
        answer = httpx.post(f"{gone.url}/track/stop", json={"session_id": "s"}, timeout=120)
        assert answer.status_code == 502 and "not running at" in answer.json()["detail"]
    finally:
        gone.stop()


def test_mask_pixels_via_router_equal_direct(live_server, backend, photo):
    """The proxied PNG decodes to the same pixels as the service's (belt and braces over byte equality)."""
    from io import BytesIO

    files = {"image": ("frame.png", photo, "image/png")}
    direct = httpx.post(f"{live_server.url}/predict/mask", files=files, data={"points": "[[50, 50]]"}, timeout=120)
    proxied = httpx.post(f"{backend.url}/edit/segment", files=files, data={"points": "[[50, 50]]"}, timeout=120)
    a = np.asarray(Image.open(BytesIO(direct.content)))
    b = np.asarray(Image.open(BytesIO(proxied.content)))
    assert a.shape == (160, 200) and np.array_equal(a, b)
