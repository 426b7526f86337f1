"""Retries (429, 503 while loading, connection refused), ``Retry-After`` (seconds and HTTP date), the total
deadline, and answers that are not the service's (HTML, non-JSON 200): sync and async clients alike, over
real HTTP to a scripted uvicorn server."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest

from milimo_clients import (
    NO_RETRY,
    AsyncInpaintingManager,
    AsyncTrackingManager,
    InpaintingManager,
    RetryPolicy,
    SamModelNotLoaded,
    SamProtocolError,
    SamServiceBusy,
    SamServiceError,
    SamServiceTimeout,
    SamServiceUnavailable,
    TrackingManager,
    parse_retry_after,
)
from tests.clients import scripted_server as s

FAST = RetryPolicy(max_attempts=5, backoff_initial_s=0.05, backoff_max_s=0.2, jitter_s=0.0)


@pytest.fixture(scope="module")
def server():
    srv = s.ScriptedServer().start()
    yield srv
    srv.stop()


def sync_mask(server, tmp_path, **kwargs):
    with InpaintingManager(server.url, **kwargs) as sam:
        return sam.get_mask_from_sam(s.PNG_1x1, [[0, 0]], output_path=tmp_path / "m.png")


def async_mask(server, tmp_path, **kwargs):
    async def run():
        async with AsyncInpaintingManager(server.url, **kwargs) as sam:
            return await sam.get_mask_from_sam(s.PNG_1x1, [[0, 0]], output_path=tmp_path / "m.png")

    return asyncio.run(run())


CALLERS = {"sync": sync_mask, "async": async_mask}


@pytest.mark.parametrize("kind", CALLERS)
def test_429_waits_retry_after_seconds_then_succeeds(server, tmp_path, kind):
    server.script("/predict/mask", s.busy("1"), s.busy("1"), s.png)
    out = CALLERS[kind](server, tmp_path, retry=FAST, timeout=20)
    assert open(out, "rb").read() == s.PNG_1x1
    times = [r.at for r in server.hits("/predict/mask")]
    assert len(times) == 3
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(0.95 <= g < 1 + server.slack_s() for g in gaps), gaps  # Retry-After: 1 beats the 0.05 s backoff


@pytest.mark.parametrize("kind", CALLERS)
def test_503_loading_with_an_http_date_is_waited_for(server, tmp_path, kind):
    when = email.utils.formatdate(time.time() + 4, usegmt=True)  # whole seconds: 3..4 s from now
    server.script("/predict/mask", s.loading(when), s.png)
    start = time.monotonic()
    CALLERS[kind](server, tmp_path, retry=FAST, timeout=20)
    hits = server.hits("/predict/mask")
    took = time.monotonic() - start
    slack = server.slack_s()
    assert len(hits) == 2 and 1.5 <= hits[1].at - hits[0].at < 4 + slack  # the date, not the 0.05 s backoff
    assert took < 4 + slack


def test_retry_after_parsing():
    now = time.time()
    assert parse_retry_after("7") == 7.0 and parse_retry_after("1.5") == 1.5
    assert abs(parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) - 30) <= 1
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None and parse_retry_after("") is None


@pytest.mark.parametrize("kind", CALLERS)
def test_retry_after_beyond_the_deadline_raises_at_once(server, tmp_path, kind):
    server.script("/predict/mask", s.busy("60"))
    start = time.monotonic()
    with pytest.raises(SamServiceBusy) as err:
        CALLERS[kind](server, tmp_path, retry=FAST, timeout=20)
    took = time.monotonic() - start
    assert len(server.hits("/predict/mask")) == 1 and took < server.slack_s()  # no sleeping to the deadline
    assert err.value.retry_after_s == 60 and err.value.status_code == 429


@pytest.mark.parametrize("kind", CALLERS)
def test_4xx_and_permanent_503_are_not_retried(server, tmp_path, kind):
    server.script("/predict/mask", s.json_answer('{"detail": "points[0]: expected an [x, y] pair"}', 400))
    with pytest.raises(SamServiceError) as err:
        CALLERS[kind](server, tmp_path, retry=FAST, timeout=10)
    assert err.value.status_code == 400 and str(err.value) == "points[0]: expected an [x, y] pair"
    assert len(server.hits("/predict/mask")) == 1
    server.script("/predict/mask", s.loading(None))  # no Retry-After: loading failed for good
    with pytest.raises(SamModelNotLoaded) as err:
        CALLERS[kind](server, tmp_path, retry=FAST, timeout=10)
    assert len(server.hits("/predict/mask")) == 1 and err.value.retry_after_s is None


@pytest.mark.parametrize("kind", CALLERS)
def test_attempts_are_bounded(server, tmp_path, kind):
    server.script("/predict/mask", s.busy("0"))
    with pytest.raises(SamServiceBusy):
        CALLERS[kind](server, tmp_path, retry=FAST, timeout=20)
    assert len(server.hits("/predict/mask")) == FAST.max_attempts


def test_non_idempotent_calls_are_not_retried_unless_asked(server):
    body = '{"frame_idx": 0, "object_ids": [], "scores": [], "masks": [], "boxes": []}'
    server.script("/track/prompt", s.busy("0"), s.json_answer(body))
    with TrackingManager(server.url, retry=FAST) as tracker:
        with pytest.raises(SamServiceBusy):
            tracker.add_prompt("s", 0, text="x")
    assert len(server.hits("/track/prompt")) == 1
    server.script("/track/prompt", s.busy("0"), s.json_answer(body))
    with TrackingManager(
        server.url, retry=RetryPolicy(max_attempts=3, backoff_initial_s=0.05, non_idempotent=True)
    ) as tracker:
        assert tracker.add_prompt("s", 0, text="x").frame_idx == 0
    assert len(server.hits("/track/prompt")) == 2
    # Idempotent tracking calls are retried by default.
    server.script("/track/stop", s.busy("0"), s.json_answer('{"session_id": "s", "closed": true}'))

    async def stop():
        async with AsyncTrackingManager(server.url, retry=FAST) as tracker:
            return await tracker.stop_session("s")

    assert asyncio.run(stop()) is True and len(server.hits("/track/stop")) == 2


@pytest.mark.parametrize("kind", CALLERS)
def test_connection_refused_at_start_up_is_retried(tmp_path, kind):
    late = s.ScriptedServer()
    late.script("/predict/mask", s.png)
    late.start(delay_s=1.0)
    try:
        start = time.monotonic()
        out = CALLERS[kind](
            late, tmp_path, retry=RetryPolicy(max_attempts=30, backoff_initial_s=0.1, backoff_max_s=0.3), timeout=30
        )
        assert open(out, "rb").read() == s.PNG_1x1 and time.monotonic() - start >= 0.9
    finally:
        late.wait_started()
        late.stop()


@pytest.mark.parametrize("kind", CALLERS)
def test_a_dripping_answer_cannot_outlast_the_budget(server, tmp_path, kind):
    """One byte every 2 s never trips a per-read timeout; the 5 s budget per call still ends it."""
    server.script("/predict/mask", s.drip(2.0))
    start = time.monotonic()
    with pytest.raises(SamServiceTimeout) as err:
        CALLERS[kind](server, tmp_path, retry=NO_RETRY, timeout=5)
    elapsed = time.monotonic() - start
    # the 5 s budget, plus at most one 2 s drip interval to notice it (unbounded, it would take 2000 s)
    assert 4.5 <= elapsed < 5 + 2 + server.slack_s(), elapsed
    assert "5 s budget" in str(err.value)


@pytest.mark.parametrize("kind", CALLERS)
def test_html_503_from_a_proxy_is_not_model_not_loaded(server, tmp_path, kind):
    server.script("/predict/mask", s.html(503))
    with pytest.raises(SamServiceUnavailable) as err:
        CALLERS[kind](server, tmp_path, retry=FAST, timeout=10)
    assert not isinstance(err.value, SamModelNotLoaded)
    assert "not the SAM service's answer" in str(err.value) and "nginx" in str(err.value)
    assert len(server.hits("/predict/mask")) == 1  # no Retry-After: not retried


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_non_json_200_is_a_clear_protocol_error(server, tmp_path, kind):
    server.script("/detect", s.html(200))
    server.script("/predict/mask", s.html(200))

    async def run_async():
        async with AsyncInpaintingManager(server.url) as sam:
            with pytest.raises(SamProtocolError) as detect_err:
                await sam.detect_objects(s.PNG_1x1, "cup")
            with pytest.raises(SamProtocolError) as mask_err:
                await sam.get_mask_from_sam(s.PNG_1x1, [[0, 0]], output_path=tmp_path / "m.png")
            return detect_err.value, mask_err.value

    if kind == "async":
        detect_err, mask_err = asyncio.run(run_async())
    else:
        with InpaintingManager(server.url) as sam:
            with pytest.raises(SamProtocolError) as e1:
                sam.detect_objects(s.PNG_1x1, "cup")
            with pytest.raises(SamProtocolError) as e2:
                sam.get_mask_from_sam(s.PNG_1x1, [[0, 0]], output_path=tmp_path / "m.png")
            detect_err, mask_err = e1.value, e2.value
    assert "POST /detect: expected a JSON answer, got text/html" in str(detect_err)
    assert "expected a PNG mask, got text/html" in str(mask_err)
    assert not (tmp_path / "m.png").exists()


def test_event_loop_stays_free_during_a_slow_call(server):
    """While the async client waits 3 s for an answer, other tasks on the loop keep running."""
    server.script("/detect", s.slow(3.0, s.json_answer('{"objects": [], "count": 0, "width": 1, "height": 1}')))

    async def run():
        gaps, last = [], time.monotonic()

        async def ticker():
            nonlocal last
            while True:
                await asyncio.sleep(0.02)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        async with AsyncInpaintingManager(server.url) as sam:
            result = await sam.detect_objects(s.PNG_1x1, "cup")
        tick.cancel()
        return result, gaps

    result, gaps = asyncio.run(run())
    # A loop blocked by the call would show one gap of >= 3 s (the call's duration) and few ticks.
    assert result.count == 0 and len(gaps) >= 30 and max(gaps) < 3.0, (len(gaps), max(gaps))


@pytest.fixture()
def header_dripper():
    """A raw socket server that sends its status line and headers one byte every second, forever."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 1000:
                    if stop.wait(1.0):
                        break
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    listener.close()


class _Url:
    def __init__(self, url):
        self.url = url


@pytest.mark.parametrize("kind", CALLERS)
def test_dripping_headers_cannot_outlast_the_budget(server, header_dripper, tmp_path, kind):
    start = time.monotonic()
    with pytest.raises(SamServiceTimeout):
        CALLERS[kind](_Url(header_dripper), tmp_path, retry=NO_RETRY, timeout=3)
    # the 3 s budget plus at most one 1 s drip interval (unbounded, it would take 1000 s)
    assert 2.5 <= time.monotonic() - start < 3 + 1 + server.slack_s()
