"""GET /metrics on a real uvicorn process: the Prometheus text format (parsed with prometheus_client's own
parser), and counters that move by exactly the requests made."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from server.main import create_app
from tests.server.conftest import tiny_settings
from tests.server.live import start_app, stop_server
from tests.server.media import encode, moving_crops, write_video


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_app(tmp_path_factory.mktemp("metrics"), {})
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def scrape(api) -> dict[tuple[str, tuple], float]:
    """Every sample as ``(name, sorted labels) -> value``."""
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_total(samples, method: str, route: str, status: int) -> float:
    return value(samples, "sam3_http_requests_total", method=method, route=route, status=str(status))


def test_http_counters_move_by_exactly_the_requests_made(api, astronaut):
    photo = encode(astronaut[200:328, 150:278], "PNG")  # an image no other test of this module sends
    before = scrape(api)
    for _ in range(3):
        assert api.get("/health").status_code == 200
    for point in ("[[10, 10]]", "[[60, 40]]"):  # the same image twice: one backbone run, one cache hit
        response = api.post("/predict/mask", files={"image": ("p.png", photo, "image/png")}, data={"points": point})
        assert response.status_code == 200
    assert (
        api.post("/predict/mask", files={"image": ("p.png", photo, "image/png")}, data={"points": "[["}).status_code
        == 400
    )
    assert api.get("/no/such/page").status_code == 404
    after = scrape(api)

    def delta(method, route, status):
        return requests_total(after, method, route, status) - requests_total(before, method, route, status)

    assert delta("GET", "/health", 200) == 3
    assert delta("POST", "/predict/mask", 200) == 2
    assert delta("POST", "/predict/mask", 400) == 1
    assert delta("GET", "other", 404) == 1  # unknown paths share one label
    assert delta("GET", "/metrics", 200) == 1  # the first scrape (the second is counted after it answers)
    # The latency histogram counts the same requests, per route and status.
    histogram = "sam3_http_request_duration_seconds_count"
    assert (
        value(after, histogram, method="POST", route="/predict/mask", status="200")
        - value(before, histogram, method="POST", route="/predict/mask", status="200")
        == 2
    )
    # Two model calls: two queue waits and two lock holds observed; one backbone run, one image-cache hit.
    for name in ("sam3_model_queue_wait_seconds_count", "sam3_model_lock_hold_seconds_count"):
        assert value(after, name) - value(before, name) == 2, name
    assert value(after, "sam3_backbone_runs_total") - value(before, "sam3_backbone_runs_total") == 1
    assert (
        value(after, "sam3_cache_hits_total", cache="image") - value(before, "sam3_cache_hits_total", cache="image")
        == 1
    )
    assert (
        value(after, "sam3_cache_misses_total", cache="image") - value(before, "sam3_cache_misses_total", cache="image")
        == 1
    )
    assert value(after, "sam3_model_queue_depth") == 0
    assert value(after, "sam3_http_requests_in_flight") == 1  # the scrape itself


def test_model_info_and_load_time(auto_policy):
    """The info labels name the precision ``auto`` resolved to, both ways whatever this CPU (tests/conftest.py)."""
    settings = tiny_settings(cpu_bf16=auto_policy.cpu_bf16)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    info = [labels for (name, labels), v in samples.items() if name == "sam3_model_info" and v == 1]
    assert len(info) == 1
    labels = dict(info[0])
    assert labels["device"] == "cpu" and labels["precision"] == auto_policy.mode and labels["preset"] == "tiny"
    assert labels["random_weights"] == "true"
    assert value(samples, "sam3_model_loaded") == 1
    assert value(samples, "sam3_model_load_seconds") > 0


def test_sessions_and_frames_propagated(server, api, astronaut):
    write_video(server.media_root / "metrics.mp4", moving_crops(astronaut, 3))
    before = scrape(api)
    start = api.post("/track/start", json={"video_path": str(server.media_root / "metrics.mp4"), "session_id": "m1"})
    assert start.status_code == 200, start.text
    assert value(scrape(api), "sam3_tracking_sessions_open") == value(before, "sam3_tracking_sessions_open") + 1
    assert api.post("/track/prompt", json={"session_id": "m1", "frame_idx": 0, "points": [[48, 48]]}).status_code == 200
    propagated = api.post("/track/propagate", json={"session_id": "m1", "direction": "forward", "start_frame": 0})
    assert propagated.status_code == 200, propagated.text
    frames = propagated.json()["num_frames_processed"]
    assert api.post("/track/stop", json={"session_id": "m1"}).json()["closed"] is True
    after = scrape(api)
    assert value(after, "sam3_frames_propagated_total") - value(before, "sam3_frames_propagated_total") == frames == 3
    assert value(after, "sam3_tracking_sessions_open") == value(before, "sam3_tracking_sessions_open")
    assert (
        requests_total(after, "POST", "/track/propagate", 200) - requests_total(before, "POST", "/track/propagate", 200)
        == 1
    )


def test_metrics_off_is_404():
    app = create_app(tiny_settings(metrics=False))
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan (no model) needed for a 404
    response = client.get("/metrics")
    assert response.status_code == 404
    assert response.json()["detail"]
    assert "x-request-id" in response.headers  # the rest of the edge is still there
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]
