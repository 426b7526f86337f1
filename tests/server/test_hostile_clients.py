"""Hostile clients, second round (issue 25), each over a real uvicorn started as run_sam.sh starts it (tiny preset,
random weights, loopback only, every wait bounded):

- a media listing with a symlink loop and names that are not UTF-8 (skipped and logged, never a 500);
- concurrent /track/start past the cap and with one id (atomic admission), and a failed start freeing its slot;
- streamed propagations whose reader never reads: cancel and stop act at once, and the send timeout ends them;
- invented HTTP methods (metric labels from a closed set);
- paths outside the roots (one status and one message, whatever they are);
- /media/frame (the frame limits of /track/start, seeking, the work queue), a FIFO among frames, hard links;
- request heads over the limit and malformed requests (the JSON error shape with X-Request-ID).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.attack import stalled_stream
from tests.server.live import start_app, stop_server
from tests.server.media import write_video

CAP = 4
MAX_FRAMES = 60
SEND_TIMEOUT_S = 300  # the main server's; the send-timeout test has its own server (2 s)
SHORT_SEND_TIMEOUT_S = 2
HEADER_KB = 16
OUTSIDE = "video_path: outside the media roots (SAM_MEDIA_ROOTS)"


def _big_clip(path) -> None:
    """Large frames (1280x720 of 16-pixel blocks), so that a stream's lines (about 40 KB a frame with one
    clicked object at the tiny preset) fill the socket buffers within a few frames."""
    rng = np.random.default_rng(0)
    big = np.kron(rng.integers(0, 255, (45, 80, 3), dtype=np.uint8), np.ones((16, 16, 1), np.uint8))
    write_video(path, [np.roll(big, 8 * i, axis=1) for i in range(MAX_FRAMES)])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {
        "SAM_MAX_SESSIONS": str(CAP),
        "SAM_MAX_VIDEO_FRAMES": str(MAX_FRAMES),
        "SAM_STREAM_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
        "SAM_MAX_HEADER_KB": str(HEADER_KB),
        "SAM_MEDIA_REFUSE_HARDLINKS": "true",
    }
    live = start_app(tmp_path_factory.mktemp("hostile_clients"), env)
    rng = np.random.default_rng(0)
    small = [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(6)]
    write_video(live.media_root / "small.mp4", small)
    _big_clip(live.media_root / "big.mp4")
    yield live
    stop_server(live)


@pytest.fixture()
def short_timeout_server(tmp_path):
    env = {"SAM_MAX_VIDEO_FRAMES": str(MAX_FRAMES), "SAM_STREAM_SEND_TIMEOUT_S": str(SHORT_SEND_TIMEOUT_S)}
    live = start_app(tmp_path, env)
    _big_clip(live.media_root / "big.mp4")
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def wait_for(condition, timeout_s: float, step_s: float = 0.1):
    """Poll ``condition()`` until it is truthy (returned) or ``timeout_s`` passes (None)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    return None


def log_has(server, text: str, timeout_s: float = 10) -> bool:
    return bool(wait_for(lambda: text in server.log_path.read_text(errors="replace"), timeout_s))


def open_sessions(api) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith("sam3_tracking_sessions_open "):
            return float(line.split()[1])
    raise AssertionError("no sam3_tracking_sessions_open")


def stop_all(api, ids) -> None:
    for sid in ids:
        api.post("/track/stop", json={"session_id": sid})
    assert wait_for(lambda: open_sessions(api) == 0, 10), "sessions left open"


# ---------------------------------------------------------------- media listing


def test_listing_skips_loops_and_names_that_are_not_utf8(server, api):
    root = os.fsencode(server.media_root)
    os.symlink(b"loop_a", os.path.join(root, b"loop_b"))
    os.symlink(b"loop_b", os.path.join(root, b"loop_a"))
    os.symlink(b"selfloop.mp4", os.path.join(root, b"selfloop.mp4"))
    with open(os.path.join(root, b"bad\xff name.mp4"), "wb") as f:
        f.write((server.media_root / "small.mp4").read_bytes())
    os.mkdir(os.path.join(root, b"frames\xfe"))
    with open(os.path.join(root, b"frames\xfe", b"0.png"), "wb") as f:
        Image.new("RGB", (16, 16)).save(f, format="PNG")
    try:
        response = api.get("/media/videos")
        assert response.status_code == 200, response.text
        names = {item["name"] for item in response.json()["items"]}
        assert {"small.mp4", "big.mp4"} <= names, names
        assert log_has(server, "GET /media/videos skipped")
    finally:
        for name in (b"loop_a", b"loop_b", b"selfloop.mp4", b"bad\xff name.mp4", b"frames\xfe/0.png"):
            os.unlink(os.path.join(root, name))
        os.rmdir(os.path.join(root, b"frames\xfe"))


# ---------------------------------------------------------------- admission


async def _concurrent_starts(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return await asyncio.gather(*(client.post("/track/start", json=body) for body in bodies))


def test_concurrent_starts_never_pass_the_cap_and_duplicates_are_409(server, api):
    video = str(server.media_root / "small.mp4")
    assert open_sessions(api) == 0
    for trial in range(2):
        ids = [f"cap{trial}_{i}" for i in range(2 * CAP)]
        try:
            bodies = [{"video_path": video, "session_id": s} for s in ids]
            answers = asyncio.run(_concurrent_starts(server.url, bodies))
            statuses = sorted(r.status_code for r in answers)
            assert statuses == [200] * CAP + [429] * CAP, [(r.status_code, r.text[:100]) for r in answers]
            assert all("retry-after" in r.headers for r in answers if r.status_code == 429)
            assert open_sessions(api) == CAP
        finally:
            stop_all(api, ids)
    try:
        answers = asyncio.run(_concurrent_starts(server.url, [{"video_path": video, "session_id": "twin"}] * (2 * CAP)))
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200] + [409] * (2 * CAP - 1), [(r.status_code, r.text[:100]) for r in answers]
        assert all("already exists" in r.json()["detail"] for r in answers if r.status_code == 409)
    finally:
        stop_all(api, ["twin"])


def test_a_failed_start_frees_its_slot(server, api):
    video = str(server.media_root / "small.mp4")
    fifo = server.media_root / "admission_pipe.mp4"
    os.mkfifo(fifo)
    ids = [f"full{i}" for i in range(CAP - 1)]
    assert open_sessions(api) == 0
    try:
        for sid in ids:
            assert api.post("/track/start", json={"video_path": video, "session_id": sid}).status_code == 200
        for _ in range(3):  # each failure gives its reserved slot back
            assert api.post("/track/start", json={"video_path": str(fifo), "session_id": "pipe"}).status_code == 415
            assert api.post("/track/start", json={"video_path": "/etc/passwd", "session_id": "out"}).status_code == 403
        assert api.post("/track/start", json={"video_path": video, "session_id": "last"}).status_code == 200
        assert api.post("/track/start", json={"video_path": video, "session_id": "over"}).status_code == 429
    finally:
        stop_all(api, ids + ["last"])
        fifo.unlink()


# ---------------------------------------------------------------- streams whose reader never reads


def _prompt(api, sid: str) -> httpx.Response:
    return api.post("/track/prompt", json={"session_id": sid, "frame_idx": 0, "points": [[600, 300]], "obj_id": 1})


def _frames_propagated(api) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith("sam3_frames_propagated_total "):
            return float(line.split()[1])
    return 0.0


def _busy(api, sid: str) -> bool:
    """A propagation holds the session: an exclusive request that changes nothing (no object 999) is 409."""
    answer = api.post("/track/remove_object", json={"session_id": sid, "obj_id": 999})
    assert answer.status_code in (200, 409), answer.text
    return answer.status_code == 409


def _wait_until_stalled(api, sid: str, timeout_s: float = 300) -> None:
    """The propagation holds the session, has not reached the end of the video, and has computed nothing for
    four times its slowest frame so far (at least 3 s): it waits for its reader."""
    assert wait_for(lambda: _busy(api, sid), 60), "the propagation did not start"
    last_done, last_change, slowest = -1.0, time.monotonic(), 0.0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert _busy(api, sid), "the propagation ended without stalling"
        done, now = _frames_propagated(api), time.monotonic()
        if done != last_done:
            if last_done >= 0:
                slowest = max(slowest, now - last_change)
            last_done, last_change = done, now
        elif now - last_change > max(3.0, 4 * slowest):
            return
        time.sleep(0.3)
    raise AssertionError("the stream never stalled")


def _start_clicked(api, server, sid: str) -> None:
    r = api.post("/track/start", json={"video_path": str(server.media_root / "big.mp4"), "session_id": sid})
    assert r.status_code == 200, r.text
    assert _prompt(api, sid).status_code == 200


def test_cancel_and_stop_act_at_once_on_a_stream_whose_reader_never_reads(server, api):
    _start_clicked(api, server, "stall")
    sock = stalled_stream(server.url, "stall")
    try:
        _wait_until_stalled(api, "stall")
        assert _frames_propagated(api) < MAX_FRAMES * 2  # stalled before the end of the video
        assert api.post("/track/cancel", json={"session_id": "stall"}).json()["cancelled"] is True
        # usable again at once, with the reader still not reading
        assert wait_for(lambda: not _busy(api, "stall"), 10), "cancel did not free the session"
        assert _prompt(api, "stall").status_code == 200
        sock2 = stalled_stream(server.url, "stall")
        try:
            _wait_until_stalled(api, "stall")
            assert api.post("/track/stop", json={"session_id": "stall"}).json()["closed"] is True
            assert log_has(server, "session stall closed: its memory is freed"), server.log()
            assert open_sessions(api) == 0
        finally:
            sock2.close()
    finally:
        sock.close()
        stop_all(api, ["stall"])


def test_a_reader_that_takes_nothing_is_dropped_after_the_send_timeout(short_timeout_server):
    server = short_timeout_server
    with httpx.Client(base_url=server.url, timeout=120) as api:
        _start_clicked(api, server, "slow")
        sock = stalled_stream(server.url, "slow")
        try:
            assert wait_for(lambda: _busy(api, "slow"), 30)
            # nobody cancels: the send timeout ends the stream and the session is usable again
            expected = f"stream reader took nothing for {SHORT_SEND_TIMEOUT_S} s (SAM_STREAM_SEND_TIMEOUT_S)"
            assert log_has(server, expected, 300), server.log()
            assert wait_for(lambda: not _busy(api, "slow"), 30)
            assert _frames_propagated(api) < MAX_FRAMES  # it ended before the end of the video
            assert _prompt(api, "slow").status_code == 200
        finally:
            sock.close()


# ---------------------------------------------------------------- metric labels


def _raw(server, request: bytes) -> bytes:
    """Send one request on its own connection and read until the server closes it."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _labels(scrape: str, name: str) -> set[str]:
    return {line.split(f'{name}="')[1].split('"')[0] for line in scrape.splitlines() if f'{name}="' in line}


KNOWN = {"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH", "CONNECT", "TRACE", "other"}


def test_invented_methods_share_one_metric_label(server, api):
    rng = np.random.default_rng(1)
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    for i in range(300):
        length = 20_000 if i % 30 == 0 else int(rng.integers(3, 40))
        method = "GET" if i % 10 == 0 else "".join(rng.choice(letters, length))
        path = "/health" if i % 2 else f"/nowhere/{i}"
        answer = _raw(server, f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
        assert b"application/json" in answer.split(b"\r\n\r\n")[0].lower(), answer[:300]
    scrape = api.get("/metrics").text
    assert len(scrape) < 200_000, len(scrape)
    assert _labels(scrape, "method") <= KNOWN
    routes = _labels(scrape, "route")
    assert "other" in routes and not any(r.startswith("/nowhere") for r in routes), routes


def test_invented_methods_that_reach_the_app_are_labelled_other(tmp_path):
    # httptools refuses invented methods before the app (400 above); h11 (uvicorn --http h11) and other
    # servers pass them on: the app labels them itself.
    from fastapi.testclient import TestClient

    from server.main import create_app
    from tests.server.conftest import tiny_settings

    app = create_app(
        tiny_settings(random_weights=False, checkpoint=str(tmp_path / "none.pt"), media_roots=str(tmp_path))
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        for i in range(200):
            assert client.request("X" * (1 + i * 100), f"/nowhere/{i}").status_code == 404
            assert client.request(f"BREW{i}", "/health").status_code == 405
        scrape = client.get("/metrics").text
    assert len(scrape) < 200_000, len(scrape)
    assert _labels(scrape, "method") <= KNOWN and "other" in _labels(scrape, "method")
    assert 'sam3_http_requests_total{method="other",route="other",status="404"} 200.0' in scrape
    assert 'sam3_http_requests_total{method="other",route="/health",status="405"} 200.0' in scrape


# ---------------------------------------------------------------- paths outside the roots


def test_every_path_outside_the_roots_gets_one_answer(server, api, tmp_path):
    root = server.media_root
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "clip.mp4").write_bytes((root / "small.mp4").read_bytes())
    locked = outside / "locked"
    locked.mkdir()
    (locked / "clip.mp4").write_bytes(b"x")
    locked.chmod(0)
    (outside / "loop.mp4").symlink_to(outside / "loop.mp4")
    links = {"to_cwd": "/proc/self/cwd", "to_fd": "/proc/self/fd/1", "to_clip": str(outside / "clip.mp4")}
    links["to_loop"] = str(outside / "loop.mp4")
    for name, target in links.items():
        (root / name).symlink_to(target)
    paths = [
        "/etc/passwd",
        "/nonexistent/clip.mp4",
        str(outside / "clip.mp4"),
        str(locked / "clip.mp4"),
        str(outside / "loop.mp4"),
        str(root / ".." / "outside.mp4"),
        "~root/clip.mp4",
        "~nosuchuser_zz/clip.mp4",
        *(str(root / name) for name in links),
    ]
    try:
        for path in paths:
            for answer in (
                api.post("/track/start", json={"video_path": path}),
                api.get("/media/frame", params={"video_path": path, "frame_idx": 0}),
            ):
                assert answer.status_code == 403, (path, answer.status_code, answer.text)
                assert answer.json() == {"detail": OUTSIDE}, (path, answer.text)
    finally:
        locked.chmod(0o755)
        for name in links:
            (root / name).unlink()


# ---------------------------------------------------------------- /media/frame, frame folders, hard links


def _queue_waits(api) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith("sam3_model_queue_wait_seconds_count "):
            return float(line.split()[1])
    return 0.0


def test_media_frame_has_the_frame_limits_seeks_and_queues(server, api):
    root = server.media_root
    over = root / "over.mp4"
    write_video(over, [np.full((32, 32, 3), (i * 4) % 256, np.uint8) for i in range(MAX_FRAMES + 2)])
    refused = api.post("/track/start", json={"video_path": str(over)})
    assert refused.status_code == 413 and "SAM_MAX_VIDEO_FRAMES" in refused.json()["detail"], refused.text
    answer = api.get("/media/frame", params={"video_path": str(over), "frame_idx": 0})
    assert (answer.status_code, answer.json()) == (413, refused.json())
    # frames read in any order equal the frames decoded from the start, one model-queue slot each
    import av

    with av.open(str(root / "big.mp4")) as container:
        reference = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    waits = _queue_waits(api)
    order = [30, 2, 31, 39, 0, 17]
    for index in order:
        answer = api.get("/media/frame", params={"video_path": str(root / "big.mp4"), "frame_idx": index})
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
        got = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"), dtype=np.int16)
        error = np.abs(got - reference[index]).mean()
        others = min(np.abs(got - reference[j]).mean() for j in range(len(reference)) if j != index)
        assert error < 6 and error < others, (index, error, others)
    assert _queue_waits(api) - waits == len(order)
    past = api.get("/media/frame", params={"video_path": str(root / "big.mp4"), "frame_idx": MAX_FRAMES})
    assert past.status_code == 400 and past.json()["detail"].startswith("frame_idx:"), past.text


def test_a_fifo_among_the_frames_is_refused_at_open(server, api):
    folder = server.media_root / "piped"
    folder.mkdir()
    for i in (0, 2, 3):
        Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(folder / f"{i}.png")
    os.mkfifo(folder / "1.png")
    started = time.monotonic()
    answer = api.post("/track/start", json={"video_path": str(folder), "session_id": "piped"}, timeout=20)
    assert answer.status_code == 415 and "1.png is not a regular file" in answer.json()["detail"], answer.text
    answer = api.get("/media/frame", params={"video_path": str(folder), "frame_idx": 0}, timeout=20)
    assert answer.status_code == 415, answer.text
    print(f"\nFIFO among frames refused in {time.monotonic() - started:.2f} s")


def test_hard_links_are_refused_when_asked(server, api, tmp_path):
    outside = tmp_path / "secret.mp4"
    outside.write_bytes((server.media_root / "small.mp4").read_bytes())
    link = server.media_root / "hardlink.mp4"
    os.link(outside, link)
    try:
        for answer in (
            api.post("/track/start", json={"video_path": str(link)}),
            api.get("/media/frame", params={"video_path": str(link), "frame_idx": 0}),
        ):
            assert answer.status_code == 403, answer.text
            assert "SAM_MEDIA_REFUSE_HARDLINKS" in answer.json()["detail"]
    finally:
        link.unlink()


# ---------------------------------------------------------------- the request head


def test_oversized_heads_and_malformed_requests_get_json(server):
    for request in (
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (200 * 1024) + b"\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Many: b\r\n" * 3000 + b"\r\n",
        b"GET /" + b"u" * (HEADER_KB * 1024 + 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        try:
            answer = _raw(server, request)
        except (ConnectionResetError, BrokenPipeError):  # closed while the head was still arriving: a shorter one
            answer = _raw(server, request[: HEADER_KB * 1024 + 2048])
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431"), head
        assert b"content-type: application/json" in head.lower() and b"x-request-id: " in head.lower()
        assert json.loads(body)["detail"].startswith("headers:") and b"SAM_MAX_HEADER_KB" in body
    head, _, body = _raw(server, b"NOT HTTP AT ALL\r\n\r\n").partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"x-request-id: " in head.lower(), head
    assert json.loads(body)["detail"].startswith("request:")
    assert httpx.get(f"{server.url}/health", headers={"X-Fine": "a" * 1000}).status_code == 200


def test_the_service_is_intact_after_all_of_it(server, api):
    assert server.process.poll() is None
    assert api.get("/health").json()["model_loaded"] is True
    log = server.log_path.read_text(errors="replace")
    assert "Exception in ASGI application" not in log and "Traceback" not in log, log[-3000:]
