"""Load test: 32 concurrent clients for a minute against a real uvicorn on 127.0.0.1.

Starts ``uvicorn server.main:app`` (tiny preset, random weights, CPU unless told otherwise) on a free local
port, or uses ``--url`` (127.0.0.1 / localhost only). Each client loops over a mix of what the backend sends
(clicks on an image already encoded, clicks on a new image, text detection, text masks) and hostile input
(bad JSON, nested JSON, a non-image, an unknown session), while a probe measures ``/health`` every 0.5 s.
Prints the status counts, latency percentiles per kind, the ``/health`` latency and the server's RSS before,
at its peak and after. Bounded: ``--clients`` <= 64, ``--duration`` <= 300 s.

    .venv/bin/python bench/load.py                       # 32 clients, 60 s
    .venv/bin/python bench/load.py --clients 8 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.live_server import rss_mb, start_server, stop_server  # noqa: E402


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def make_requests(seed: int) -> list[tuple[str, dict]]:
    """(kind, httpx request kwargs) mix; photos from scikit-image, cropped so sizes vary."""
    from skimage import data

    photo = data.astronaut()
    rng = np.random.default_rng(seed)
    shared = png(photo[:256, :256])
    fresh = [png(np.ascontiguousarray(photo[y : y + 160, x : x + 200])) for y, x in rng.integers(0, 300, (64, 2))]
    mix: list[tuple[str, dict]] = []
    for i in range(64):
        x, y = (int(v) for v in rng.integers(5, 250, 2))
        mix.append(
            (
                "click_cached",
                dict(
                    method="POST",
                    url="/predict/mask",
                    files={"image": ("a.png", shared, "image/png")},
                    data={"points": f"[[{x}, {y}]]"},
                ),
            )
        )
        mix.append(
            (
                "click_new_image",
                dict(
                    method="POST",
                    url="/predict/mask",
                    files={"image": ("b.png", fresh[i], "image/png")},
                    data={"points": "[[50, 50]]"},
                ),
            )
        )
        if i % 2 == 0:
            mix.append(
                (
                    "detect",
                    dict(
                        method="POST",
                        url="/detect",
                        files={"image": ("a.png", shared, "image/png")},
                        data={"text": "a person"},
                    ),
                )
            )
        if i % 4 == 0:
            mix.append(
                (
                    "segment_text",
                    dict(
                        method="POST",
                        url="/segment/text",
                        files={"image": ("a.png", shared, "image/png")},
                        data={"text": "face"},
                    ),
                )
            )
        hostile = [
            dict(
                method="POST",
                url="/predict/mask",
                files={"image": ("a.png", shared, "image/png")},
                data={"points": "[" * 20_000},
            ),
            dict(
                method="POST",
                url="/predict/mask",
                files={"image": ("a.png", shared, "image/png")},
                data={"points": f"[[{2**70}, 1]]"},
            ),
            dict(
                method="POST",
                url="/detect",
                files={"image": ("x.png", b"not an image" * 50, "image/png")},
                data={"text": "cat"},
            ),
            dict(method="POST", url="/track/prompt", json={"session_id": "nobody", "frame_idx": 0, "text": "x"}),
        ]
        mix.append(("hostile", hostile[i % len(hostile)]))
    order = rng.permutation(len(mix))
    return [mix[i] for i in order]


async def client_loop(client: httpx.AsyncClient, mix, offset: int, stop_at: float, results) -> None:
    i = offset
    while time.monotonic() < stop_at:
        kind, request = mix[i % len(mix)]
        i += 1
        started = time.perf_counter()
        try:
            response = await client.request(**request)
            status = response.status_code
        except httpx.HTTPError as exc:
            status = f"error:{type(exc).__name__}"
        results.append((kind, status, time.perf_counter() - started))


async def health_probe(client: httpx.AsyncClient, stop_at: float, latencies: list, statuses: Counter) -> None:
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        try:
            statuses[(await client.get("/health")).status_code] += 1
        except httpx.HTTPError as exc:
            statuses[f"error:{type(exc).__name__}"] += 1
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.5)


async def sample_rss(pid: int | None, stop_at: float, peak: list) -> None:
    while time.monotonic() < stop_at:
        value = rss_mb(pid) if pid is not None else None
        if value is not None:
            peak[0] = max(peak[0], value)
        await asyncio.sleep(0.5)


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    q = np.percentile(np.asarray(values) * 1000, [50, 90, 99])
    return f"p50 {q[0]:8.1f}  p90 {q[1]:8.1f}  p99 {q[2]:8.1f}  max {max(values) * 1000:8.1f} ms"


async def run(url: str, pid: int | None, clients: int, duration: float, seed: int) -> None:
    mix = make_requests(seed)
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(300.0), limits=limits) as client:
        await client.get("/health")
        rss_before = rss_mb(pid) if pid is not None else None
        results: list = []
        health_latencies: list = []
        health_statuses: Counter = Counter()
        peak = [rss_before or 0.0]
        started = time.monotonic()
        stop_at = started + duration
        await asyncio.gather(
            *(client_loop(client, mix, k * 7, stop_at, results) for k in range(clients)),
            health_probe(client, stop_at, health_latencies, health_statuses),
            sample_rss(pid, stop_at, peak),
        )
        elapsed = time.monotonic() - started
        rss_after = rss_mb(pid) if pid is not None else None

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; server {url}")
    print(f"{clients} clients for {elapsed:.1f} s: {len(results)} requests ({len(results) / elapsed:.1f}/s)")
    statuses = Counter(s for _, s, _ in results)
    print("statuses:", dict(sorted(statuses.items(), key=str)))
    by_kind = defaultdict(list)
    kind_status = defaultdict(Counter)
    for kind, status, seconds in results:
        by_kind[kind].append(seconds)
        kind_status[kind][status] += 1
    for kind in sorted(by_kind):
        print(f"  {kind:16s} n={len(by_kind[kind]):5d}  {percentiles(by_kind[kind])}  {dict(kind_status[kind])}")
    print(f"  {'all':16s} n={len(results):5d}  {percentiles([s for _, _, s in results])}")
    print(
        f"/health during load: n={len(health_latencies)} {percentiles(health_latencies)} "
        f"statuses {dict(health_statuses)}; median {statistics.median(health_latencies) * 1000:.1f} ms"
    )
    if pid is not None:
        print(f"server RSS: before {rss_before:.0f} MB, peak {peak[0]:.0f} MB, after {rss_after:.0f} MB")
    server_errors = sum(n for s, n in statuses.items() if isinstance(s, int) and s >= 500)
    print(f"5xx: {server_errors}; transport errors: {sum(n for s, n in statuses.items() if isinstance(s, str))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--url", help="an already running service on 127.0.0.1 (default: start one)")
    parser.add_argument("--pid", type=int, help="its process id, for RSS (with --url)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.duration <= 300:
        raise SystemExit("bounded: 1..64 clients, 1..300 s")
    live = None
    if args.url:
        if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost"):
            raise SystemExit("load tests only touch 127.0.0.1")
        url, pid = args.url.rstrip("/"), args.pid
    else:
        live = start_server(Path(tempfile.mkdtemp(prefix="sam3_load_")), {"SAM3_WARMUP": "true"}, timeout_s=300)
        url, pid = live.url, live.process.pid
    try:
        asyncio.run(run(url, pid, args.clients, args.duration, args.seed))
    finally:
        if live is not None:
            stop_server(live)


if __name__ == "__main__":
    main()
