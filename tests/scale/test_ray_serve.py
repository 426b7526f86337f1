"""The service on Ray Serve: a local Ray instance (started and stopped here), two CPU replicas of the tiny
model with random weights, real HTTP on 127.0.0.1, real photos and a generated 20-frame video.

One Serve application serves the whole module; the test that kills a replica runs last.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="the scale extra is not installed (pip install -e '.[scale]')")

from milimo_clients import (  # noqa: E402
    AsyncInpaintingManager,
    AsyncTrackingManager,
    InpaintingManager,
    SamServiceError,
    TrackingManager,
)
from tests.scale.cluster import REPO, ServeCluster, serve_cluster  # noqa: E402
from tests.server.media import encode, moving_crops, write_video  # noqa: E402

FRAMES = 20
TIMEOUT = httpx.Timeout(120.0, connect=10.0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> ServeCluster:
    media = tmp_path_factory.mktemp("media")
    with serve_cluster(media, replicas=2) as running:
        yield running


@pytest.fixture(scope="module")
def video(cluster: ServeCluster, astronaut: np.ndarray) -> str:
    return str(write_video(cluster.media / "pan.mp4", moving_crops(astronaut, FRAMES)))


def replica_of(answer: httpx.Response) -> str:
    name = answer.headers.get("x-replica")
    assert name, f"{answer.request.url.path}: no X-Replica header"
    return name


def crops(photo: np.ndarray, n: int) -> list[bytes]:
    """``n`` different images (distinct features, so distinct image ids)."""
    return [encode(np.ascontiguousarray(photo[20 * i : 20 * i + 160, 20 * i : 20 * i + 192])) for i in range(n)]


def detect(client: httpx.Client, url: str, png: bytes) -> httpx.Response:
    return client.post(f"{url}/detect", files={"image": ("i.png", png, "image/png")}, data={"text": "person"})


def start_session(client: httpx.Client, url: str, video: str) -> tuple[str, str]:
    answer = client.post(f"{url}/track/start", json={"video_path": video})
    assert answer.status_code == 200, answer.text
    return answer.json()["session_id"], replica_of(answer)


def prompt(client: httpx.Client, url: str, session_id: str) -> httpx.Response:
    body = {"session_id": session_id, "frame_idx": 0, "points": [[48, 48]], "obj_id": 1}
    return client.post(f"{url}/track/prompt", json=body)


def test_image_requests_reach_both_replicas_and_every_answer_names_one(cluster, astronaut):
    images = crops(astronaut, 4)
    with httpx.Client(timeout=TIMEOUT) as client, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda png: detect(client, cluster.url, png), images * 3))
        health = client.get(f"{cluster.url}/health")
        missing = client.post(f"{cluster.url}/track/frames", json={"session_id": "nobody"})
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    assert len({replica_of(a) for a in answers}) == 2, [replica_of(a) for a in answers]
    for answer in [*answers, health, missing]:
        replica_of(answer)
        assert len(answer.headers.get_list("x-request-id")) == 1, answer.headers
    assert health.json()["model_loaded"] is True
    # an error of the app is its own answer, unchanged
    assert missing.status_code == 404 and missing.json()["detail"].startswith("session_id: ")


def test_image_id_requests_reach_the_replica_holding_the_features(cluster, astronaut):
    images = crops(astronaut, 6)
    with httpx.Client(timeout=TIMEOUT) as client, ThreadPoolExecutor(3) as pool:
        first = list(pool.map(lambda png: detect(client, cluster.url, png), images))
        holders = {a.json()["image_id"]: replica_of(a) for a in first}
        assert len(holders) == len(images)

        def by_id(image_id: str) -> tuple[str, httpx.Response]:
            data = {"image_id": image_id, "points": "[[60, 60]]"}
            return image_id, client.post(f"{cluster.url}/predict/mask", data=data)

        answers = list(pool.map(by_id, list(holders) * 5))
    ok = [(image_id, a) for image_id, a in answers if a.status_code == 200]
    assert len(ok) >= 0.95 * len(answers), [a.text for _, a in answers if a.status_code != 200]
    assert all(replica_of(a) == holders[image_id] for image_id, a in answers)
    assert all(a.headers["x-image-id"] == image_id for image_id, a in ok)


def test_every_call_of_a_session_reaches_its_replica(cluster, video):
    url = cluster.url
    with httpx.Client(timeout=TIMEOUT) as client, httpx.Client(timeout=TIMEOUT) as other:
        session_id, home = start_session(client, url, video)
        seen = [home]
        answer = prompt(client, url, session_id)
        assert answer.status_code == 200, answer.text
        seen.append(replica_of(answer))

        # a streamed propagation, cancelled from another connection after its first frames
        lines, cancels = [], []
        body = {"session_id": session_id, "direction": "forward", "stream": True}
        with client.stream("POST", f"{url}/track/propagate", json=body) as stream:
            assert stream.headers["content-type"].startswith("application/x-ndjson")
            seen.append(replica_of(stream))
            for raw in stream.iter_lines():
                lines.append(json.loads(raw))
                if lines[-1]["event"] == "frame" and lines[-1]["done"] == 2:
                    cancel = other.post(f"{url}/track/cancel", json={"session_id": session_id})
                    cancels.append(cancel)
                    seen.append(replica_of(cancel))
        assert cancels and cancels[0].json() == {"session_id": session_id, "cancelled": True}
        assert lines[0]["event"] == "start" and lines[0]["total"] == FRAMES
        assert lines[-1]["event"] == "end" and lines[-1]["cancelled"] is True
        assert lines[-1]["num_frames_processed"] < FRAMES

        # a client that hangs up mid-stream stops the propagation on the replica: the session is free again
        with httpx.Client(timeout=TIMEOUT) as leaving:
            with leaving.stream("POST", f"{url}/track/propagate", json=body) as stream:
                seen.append(replica_of(stream))
                next(stream.iter_lines())
        deadline, busy = time.monotonic() + 60, True
        while busy and time.monotonic() < deadline:
            answer = prompt(client, url, session_id)
            busy = answer.status_code == 409
            seen.append(replica_of(answer))
            time.sleep(0.2)
        assert answer.status_code == 200, answer.text

        full = client.post(f"{url}/track/propagate", json={"session_id": session_id, "direction": "forward"})
        assert full.status_code == 200 and full.json()["num_frames_processed"] == FRAMES
        calls = [
            ("/track/frames", {"session_id": session_id}),
            ("/track/remove_object", {"session_id": session_id, "obj_id": 1}),
            ("/track/reset", {"session_id": session_id}),
            ("/track/stop", {"session_id": session_id}),
        ]
        answers = [full] + [client.post(f"{url}{path}", json=body) for path, body in calls]
    assert [a.status_code for a in answers] == [200] * len(answers), [a.text for a in answers]
    assert len(answers[1].json()["frames"]) == FRAMES
    seen += [replica_of(a) for a in answers]
    assert set(seen) == {home}, seen


def test_the_milimo_clients_work_unchanged(cluster, video, astronaut):
    replicas: list[str] = []
    hooks = {"response": [lambda r: replicas.append(r.headers.get("x-replica"))]}
    with httpx.Client(timeout=TIMEOUT, event_hooks=hooks) as http:
        tracking = TrackingManager(cluster.url, client=http)
        session = tracking.start_session(video)
        first = len(replicas) - 1
        assert tracking.add_prompt(session.session_id, 0, points=[[48, 48]], obj_id=1).object_ids == [1]
        frames = list(tracking.propagate_stream(session.session_id, direction="forward"))
        assert [f.frame_idx for f in frames] == list(range(FRAMES))
        assert len(tracking.get_frames(session.session_id)) == FRAMES
        assert tracking.stop_session(session.session_id) is True
        assert len(set(replicas[first:])) == 1
        objects = InpaintingManager(cluster.url, client=http).detect_objects(encode(astronaut), "person")
        assert objects.width == astronaut.shape[1]

    async def run_async() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            tracking = AsyncTrackingManager(cluster.url, client=http)
            session = await tracking.start_session(video)
            await tracking.add_prompt(session.session_id, 0, points=[[48, 48]], obj_id=1)
            result = await tracking.propagate(session.session_id, direction="forward")
            assert [f.frame_idx for f in result.frames] == list(range(FRAMES))
            assert await tracking.stop_session(session.session_id) is True
            mask = await AsyncInpaintingManager(cluster.url, client=http).predict_mask(
                encode(astronaut), points=[[200, 150]]
            )
            assert mask.image_id

    import asyncio

    asyncio.run(run_async())


def wait_for_two_replicas(url: str, timeout_s: float = 180) -> set[str]:
    """Until /health answers from two model replicas (short attempts: after a restart, the first calls of a
    new ingress may wait for the engine to reach its replicas)."""
    deadline, names = time.monotonic() + timeout_s, set()
    with httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0)) as client:
        while time.monotonic() < deadline and len(names) < 2:
            try:
                health = client.get(f"{url}/health")
                if health.status_code == 200 and health.json()["model_loaded"]:
                    names.add(replica_of(health))
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    return names


def test_sessions_survive_a_restart_of_the_ingress(cluster, video):
    """The ingress keeps its pins in memory: after Serve restarts it, a session is found on its replica."""
    assert len(wait_for_two_replicas(cluster.url)) == 2  # whatever ran before (tests run in random order)
    with httpx.Client(timeout=TIMEOUT) as client:
        session_id, home = start_session(client, cluster.url, video)
        assert prompt(client, cluster.url, session_id).status_code == 200
        (ingress,) = cluster.replicas("SamIngress")
        cluster.kill_replica(ingress)
        assert len(wait_for_two_replicas(cluster.url)) == 2, "no answer through a new ingress"
        answers = [client.post(f"{cluster.url}/track/frames", json={"session_id": session_id}) for _ in range(6)]
        stop = client.post(f"{cluster.url}/track/stop", json={"session_id": session_id})
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert {replica_of(a) for a in answers} == {home} and replica_of(stop) == home
    assert stop.json() == {"session_id": session_id, "closed": True}


def test_scale_out_bench_smoke(cluster, video):
    """bench/scale_out.py's measurements, seconds long, on this module's two replicas (figures printed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("scale_out", REPO / "bench" / "scale_out.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    detect = bench.detect_throughput(cluster.url, bench.test_images(4), concurrency=2)
    clicks = bench.clicks_during_propagations(cluster.url, video, clicks=3, every_s=0.1)
    print("scale_out smoke:", detect, clicks)
    assert detect["requests"] == 4 and sum(detect["per_replica"].values()) == 4 and detect["requests_per_s"] > 0
    assert clicks["clicks_during"] >= 1 and clicks["click_p50_s"] > 0
    assert sorted(p["frames"] for p in clicks["propagations"]) == [FRAMES, FRAMES]
    # two sessions, one on each replica (new sessions go to the replica holding the fewest)
    assert len({p["replica"] for p in clicks["propagations"]}) == 2


def _stream_lines(url: str, session_id: str, out: list[dict], first_frame: threading.Event) -> None:
    with httpx.Client(timeout=TIMEOUT) as client:
        body = {"session_id": session_id, "direction": "forward", "stream": True}
        with client.stream("POST", f"{url}/track/propagate", json=body) as stream:
            for raw in stream.iter_lines():
                out.append(json.loads(raw))
                if out[-1]["event"] == "frame":
                    first_frame.set()
    first_frame.set()


def test_a_dead_replica_loses_only_its_own_sessions(cluster, video):
    """It kills a replica; Serve starts another, which the test waits for (tests run in random order)."""
    url = cluster.url
    assert len(wait_for_two_replicas(url)) == 2
    with httpx.Client(timeout=TIMEOUT) as client:
        sessions: dict[str, str] = {}  # replica -> session
        started = []
        for _ in range(4):  # new sessions go to the replica with the fewest: two starts cover both
            session_id, replica = start_session(client, url, video)
            started.append(session_id)
            sessions.setdefault(replica, session_id)
            if len(sessions) == 2:
                break
        assert len(sessions) == 2, f"new sessions all went to one replica: {started}"
        (doomed, victim), (survivor, kept) = sessions.items()
        for session_id in (victim, kept):
            assert prompt(client, url, session_id).status_code == 200

        victim_lines: list[dict] = []
        victim_first = threading.Event()
        kept_lines: list[dict] = []
        kept_first = threading.Event()
        threads = [
            threading.Thread(target=_stream_lines, args=(url, victim, victim_lines, victim_first)),
            threading.Thread(target=_stream_lines, args=(url, kept, kept_lines, kept_first)),
        ]
        for thread in threads:
            thread.start()
        assert victim_first.wait(120), "the doomed replica's propagation produced no frame"
        cluster.kill_replica(doomed)
        for thread in threads:
            thread.join(180)
        assert not any(thread.is_alive() for thread in threads), "a propagation stream hung"

        # the victim's stream ends with an error line; the other session's has every frame
        assert victim_lines[-1]["event"] == "error", victim_lines[-1]
        assert victim_lines[-1]["status"] == 410 and victim_lines[-1]["detail"].startswith("session_id: ")
        end = {"event": "end", "num_frames_processed": FRAMES, "cancelled": False, "removed_objects": []}
        assert kept_lines[-1] == end
        assert sorted(line["frame_idx"] for line in kept_lines if line["event"] == "frame") == list(range(FRAMES))

        lost = client.post(f"{url}/track/frames", json={"session_id": victim})
        assert lost.status_code == 410 and lost.json()["detail"].startswith("session_id: "), lost.text
        replica_of(lost)
        kept_frames = client.post(f"{url}/track/frames", json={"session_id": kept})
        assert kept_frames.status_code == 200 and replica_of(kept_frames) == survivor
        assert len(kept_frames.json()["frames"]) == FRAMES
        for session_id in started:
            client.post(f"{url}/track/stop", json={"session_id": session_id})

    # the clients: a clear error naming the session, one request, no retry loop
    requests: list[str] = []
    with httpx.Client(timeout=TIMEOUT, event_hooks={"request": [lambda r: requests.append(r.url.path)]}) as http:
        with pytest.raises(SamServiceError) as caught:
            TrackingManager(url, client=http).add_prompt(victim, 0, points=[[48, 48]])
    assert caught.value.status_code == 410 and "session_id" in caught.value.message
    assert requests == ["/track/prompt"]

    # Serve replaces the replica; /health recovers, answered by two live replicas again
    names = wait_for_two_replicas(url)
    assert len(names) == 2 and doomed not in names, f"no replacement replica answered within 180 s: {names}"
