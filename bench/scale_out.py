"""Scale-out on Ray Serve: /detect throughput with 1 and with 2 replicas, and clicks while two propagations
stream.

A local Ray instance (``tests/scale/cluster.py``: tiny preset, random weights, CPU, ``--threads`` torch
threads per replica, 127.0.0.1 only) serves the application with one model replica; then the same
application is redeployed with two. For each count:

- ``/detect`` throughput: ``--requests`` uploads of different images (new features each time: the backbone
  runs) from ``--concurrency`` clients; requests per second, p50/p99 latency, how many each replica served;
- clicks during propagation: two sessions (one per replica when there are two) on a generated
  ``--frames``-frame clip, each clicked and streaming a forward propagation, while a click on a cached
  image (``/predict/mask`` with ``image_id``) is sent every ``--every`` s; p50/p99 of those clicks, the same
  clicks with nothing else running, and the propagations' frames per second.

    python bench/scale_out.py                       # about 3-5 minutes on 2 shared cores
    python bench/scale_out.py --requests 8 --frames 8 --clicks 4 --replicas 2   # a quick look
    SAM3_RANDOM_WEIGHTS=true python bench/scale_out.py --preset sam3 --device cuda --gpus 1 --replicas 1 2
                                                    # full size on a GPU host, one GPU per replica
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TIMEOUT = httpx.Timeout(300.0, connect=10.0)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def test_images(n: int) -> list[bytes]:
    """``n`` different crops of a real photo (distinct features: every request runs the backbone)."""
    from skimage import data

    from tests.server.media import encode

    photo = data.astronaut()
    return [encode(np.ascontiguousarray(photo[(7 * i) % 300 :][:200, (11 * i) % 300 :][:, :200])) for i in range(n)]


def detect_throughput(url: str, images: list[bytes], concurrency: int) -> dict:
    """Send every image to ``/detect`` from ``concurrency`` clients; requests/s, latency, replicas used."""
    latencies: list[float] = []
    replicas: Counter[str] = Counter()
    with httpx.Client(timeout=TIMEOUT) as client:

        def one(png: bytes) -> None:
            t0 = time.perf_counter()
            answer = client.post(f"{url}/detect", files={"image": ("i.png", png, "image/png")}, data={"text": "person"})
            answer.raise_for_status()
            latencies.append(time.perf_counter() - t0)
            replicas[answer.headers["x-replica"]] += 1

        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, images))
        elapsed = time.perf_counter() - t0
    return {
        "requests": len(images),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(images) / elapsed, 3),
        "p50_s": round(percentile(latencies, 50), 3),
        "p99_s": round(percentile(latencies, 99), 3),
        "per_replica": dict(replicas),
    }


def _click(client: httpx.Client, url: str, image_id: str) -> float:
    t0 = time.perf_counter()
    answer = client.post(f"{url}/predict/mask", data={"image_id": image_id, "points": "[[100, 100]]"})
    answer.raise_for_status()
    return time.perf_counter() - t0


def _propagate(url: str, session_id: str, out: dict) -> None:
    frames, t0 = 0, time.perf_counter()
    with httpx.Client(timeout=TIMEOUT) as client:
        body = {"session_id": session_id, "direction": "forward", "stream": True}
        with client.stream("POST", f"{url}/track/propagate", json=body) as stream:
            out["replica"] = stream.headers["x-replica"]
            for raw in stream.iter_lines():
                line = json.loads(raw)
                frames += line["event"] == "frame"
                out["last"] = line
    out["frames"], out["seconds"] = frames, time.perf_counter() - t0


def clicks_during_propagations(url: str, video: str, clicks: int, every_s: float) -> dict:
    """p50/p99 of cached-image clicks while two sessions propagate (and idle), and the propagations' speed."""
    with httpx.Client(timeout=TIMEOUT) as client:
        first = client.post(
            f"{url}/predict/mask",
            files={"image": ("p.png", test_images(1)[0], "image/png")},
            data={"points": "[[100, 100]]"},
        )
        first.raise_for_status()
        image_id = first.headers["x-image-id"]
        sessions = []
        for _ in range(2):
            start = client.post(f"{url}/track/start", json={"video_path": video})
            start.raise_for_status()
            session_id = start.json()["session_id"]
            body = {"session_id": session_id, "frame_idx": 0, "points": [[48, 48]], "obj_id": 1}
            client.post(f"{url}/track/prompt", json=body).raise_for_status()
            sessions.append(session_id)
        runs = [{} for _ in sessions]
        threads = [threading.Thread(target=_propagate, args=(url, s, r)) for s, r in zip(sessions, runs)]
        for thread in threads:
            thread.start()
        busy: list[float] = []
        while len(busy) < clicks and any(t.is_alive() for t in threads):
            busy.append(_click(client, url, image_id))
            time.sleep(every_s)
        for thread in threads:
            thread.join()
        idle = [_click(client, url, image_id) for _ in range(max(3, clicks // 2))]
        for session_id in sessions:
            client.post(f"{url}/track/stop", json={"session_id": session_id})
    return {
        "clicks_during": len(busy),
        "click_p50_s": round(percentile(busy, 50), 3),
        "click_p99_s": round(percentile(busy, 99), 3),
        "idle_click_p50_s": round(percentile(idle, 50), 3),
        "propagations": [
            {"replica": r.get("replica"), "frames": r.get("frames"), "fps": round(r["frames"] / r["seconds"], 2)}
            for r in runs
        ],
    }


def wait_for_replicas(cluster, count: int, timeout_s: float = 300) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = serve.status().applications[cluster.app_name].deployments["SamReplica"].replica_states
        if states.get("RUNNING", 0) == count and sum(states.values()) == count:
            return
        time.sleep(1)
    raise TimeoutError(f"SamReplica did not reach {count} running replicas in {timeout_s} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="replica counts, in order")
    ap.add_argument("--requests", type=int, default=24, help="/detect uploads per replica count")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--frames", type=int, default=30, help="frames of the generated clip")
    ap.add_argument("--clicks", type=int, default=12)
    ap.add_argument("--every", type=float, default=0.25, help="seconds between clicks")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per replica (SAM3_NUM_THREADS)")
    ap.add_argument("--preset", default="tiny", help="SAM3_PRESET of the replicas (sam3: full size)")
    ap.add_argument("--device", default="cpu", help="SAM3_DEVICE of the replicas (cuda: give --gpus too)")
    ap.add_argument("--gpus", type=float, default=0.0, help="GPUs per replica (Ray's num_gpus: 1, 0.5 ...)")
    args = ap.parse_args()

    from skimage import data

    from tests.scale.cluster import serve_cluster
    from tests.server.media import moving_crops, write_video

    work = Path(tempfile.mkdtemp(prefix="scale_out_"))
    video = str(write_video(work / "pan.mp4", moving_crops(data.astronaut(), args.frames)))
    images = test_images(args.requests)
    results = {}
    env = {
        "SAM3_NUM_THREADS": str(args.threads),
        "SAM_MAX_SESSIONS": "4",
        "SAM3_PRESET": args.preset,
        "SAM3_DEVICE": args.device,
    }
    actor = {"num_cpus": 1, "num_gpus": args.gpus}
    print(f"load average before: {os.getloadavg()}", flush=True)
    with serve_cluster(work, replicas=args.replicas[0], env=env, actor_options=actor) as cluster:
        for count in args.replicas:
            cluster.deploy(count)
            wait_for_replicas(cluster, count)
            detect_throughput(cluster.url, test_images(2 * count), args.concurrency)  # warm every replica
            results[count] = {
                "detect": detect_throughput(cluster.url, images, args.concurrency),
                "clicks": clicks_during_propagations(cluster.url, video, args.clicks, args.every),
            }
            print(f"{count} replica(s):", json.dumps(results[count], indent=1), flush=True)
    print(f"load average after: {os.getloadavg()}", flush=True)
    if len(results) > 1:
        counts = sorted(results)
        base, top = results[counts[0]]["detect"], results[counts[-1]]["detect"]
        print(
            f"/detect throughput {counts[-1]} vs {counts[0]} replica(s): "
            f"{top['requests_per_s']:.2f} vs {base['requests_per_s']:.2f} req/s "
            f"({top['requests_per_s'] / base['requests_per_s']:.2f}x)"
        )
    print(
        "click p50/p99 during two propagations:",
        {c: (r["clicks"]["click_p50_s"], r["clicks"]["click_p99_s"]) for c, r in results.items()},
    )


if __name__ == "__main__":
    main()
