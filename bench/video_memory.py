"""Peak memory of the service while it tracks one object through long videos.

A ``uvicorn server.main:app`` (tiny preset, random weights, CPU) opens a generated 1280x720 clip (a disk
moving over a textured background, H.264 or MPEG-4 via PyAV) or a folder of JPEG frames, takes one click on
frame 0, propagates forward through every frame and stops the session. The resident set of the service
process is sampled every 20 ms during each session: its peak minus the resident set before the session is
that session's growth, and the slope of the growth between the shortest and the longest clip is the memory
cost per 1000 extra frames. Sessions run one after the other in one process (``--fresh`` starts a new
process per clip, where the process's own peak ``VmHWM`` is the figure, at the cost of a model load each).

``--repo`` runs another checkout of the service (e.g. the code before this change, from ``git worktree add
/tmp/before 4fd74dc``) with the same clips and the same client, so the two slopes compare like with like.
A service that streams (``"stream": true``) is read line by line with RLE masks; an older one answers the
plain JSON reply (PNG masks), which is part of its memory cost.

    python bench/video_memory.py --lengths 100 700 1600
    python bench/video_memory.py --repo /tmp/before --lengths 100 700 1600
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.live_server import memory_mb, start_server, stop_server  # noqa: E402

W, H = 1280, 720


def frame_at(i: int, rng_bg: np.ndarray) -> np.ndarray:
    """A textured background with a bright disk moving left to right."""
    img = rng_bg.copy()
    cx, cy, r = 200 + (i * 3) % 880, 360, 80
    yy, xx = np.ogrid[:H, :W]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = (240, 200, 40)
    return img


def background() -> np.ndarray:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 120, size=(H // 16, W // 16, 3), dtype=np.uint8)
    return np.ascontiguousarray(small.repeat(16, axis=0).repeat(16, axis=1))


def write_clip(path: Path, n: int) -> Path:
    import av

    bg = background()
    with av.open(str(path), "w") as out:
        try:
            stream = out.add_stream("libx264", rate=25)
        except Exception:  # an FFmpeg build without x264
            stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_at(i, bg), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_folder(path: Path, n: int) -> Path:
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    bg = background()
    for i in range(n):
        Image.fromarray(frame_at(i, bg)).save(path / f"{i:05d}.jpg", quality=90)
    return path


class Service:
    """A ``uvicorn server.main:app`` process of the checkout ``repo`` (tiny preset, random weights, CPU) serving
    the media in ``media`` (``tests.live_server.start_server``, the one launcher), with an HTTP client."""

    def __init__(self, repo: Path, media: Path, threads: int):
        env = {
            "SAM_MEDIA_ROOTS": str(media),
            "SAM_MAX_VIDEO_FRAMES": "100000",
            "SAM_MAX_SESSIONS": "4",
            "OMP_NUM_THREADS": str(threads),
        }
        self.live = start_server(media, env, timeout_s=1800, repo=repo)
        self.proc, self.url = self.live.process, self.live.url
        self.client = httpx.Client(base_url=self.url, timeout=7200)
        schemas = self.client.get("/openapi.json").json()["components"]["schemas"]
        self.streams = "stream" in json.dumps(schemas.get("TrackPropagateRequest", {}))

    def close(self) -> None:
        self.client.close()
        stop_server(self.live)


class RssSampler:
    """The largest resident set of a process while a block runs (sampled every 20 ms)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, False

    def __enter__(self) -> RssSampler:
        import threading

        self.before = memory_mb(self.pid)[0]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, memory_mb(self.pid)[0])
            time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        self._stop = True
        self.thread.join()


def track_one(svc: Service, video: Path) -> dict:
    """Open ``video``, click the disk on frame 0, propagate forward through every frame, stop."""
    client = svc.client
    with RssSampler(svc.proc.pid) as rss:
        t0 = time.perf_counter()
        info = client.post("/track/start", json={"video_path": str(video), "session_id": "bench"})
        info.raise_for_status()
        n = info.json()["num_frames"]
        client.post(
            "/track/prompt", json={"session_id": "bench", "frame_idx": 0, "points": [[200, 360]], "obj_id": 1}
        ).raise_for_status()
        first = None
        body = {"session_id": "bench", "direction": "forward"}
        t_prop = time.perf_counter()
        if svc.streams:
            with client.stream("POST", "/track/propagate", json={**body, "stream": True, "mask_format": "rle"}) as r:
                r.raise_for_status()
                frames = 0
                for raw in r.iter_lines():
                    event = json.loads(raw)
                    if event["event"] == "frame":
                        frames += 1
                        first = first or time.perf_counter() - t_prop
                    elif event["event"] == "error":
                        raise RuntimeError(event)
        else:
            r = client.post("/track/propagate", json=body)
            r.raise_for_status()
            frames = r.json()["num_frames_processed"]
        seconds = time.perf_counter() - t0
    client.post("/track/stop", json={"session_id": "bench"}).raise_for_status()
    return {
        "frames": n,
        "propagated": frames,
        "before_mb": rss.before,
        "peak_mb": rss.peak,
        "growth_mb": rss.peak - rss.before,
        "seconds": seconds,
        "first_frame_s": first,
        "streamed": svc.streams,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout of the service to measure")
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 700, 1600])
    ap.add_argument(
        "--folder",
        type=int,
        nargs="*",
        default=None,
        help="lengths for the JPEG-folder runs (default: the shortest and the longest clip)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None, help="where to write the clips (kept for reuse)")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="a new service process per clip (default: one process, sessions one after the other)",
    )
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="video_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    folder_lengths = args.folder if args.folder is not None else [min(args.lengths), max(args.lengths)]
    rev = subprocess.run(["git", "-C", str(args.repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    print(f"service: {args.repo} ({rev.stdout.strip() or 'not a git checkout'})")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; tiny preset, CPU, {W}x{H}")
    rows = {}
    jobs = [("file", n) for n in args.lengths] + [("folder", n) for n in folder_lengths]
    for kind, n in jobs:
        src = work / (f"clip_{n}.mp4" if kind == "file" else f"frames_{n}")
        if not src.exists():
            (write_clip if kind == "file" else write_folder)(src, n)
    svc = None
    try:
        for kind, n in jobs:
            if svc is None or args.fresh:
                if svc is not None:
                    svc.close()
                svc = Service(args.repo, work, args.threads)
            src = work / (f"clip_{n}.mp4" if kind == "file" else f"frames_{n}")
            r = track_one(svc, src)
            r["hwm_mb"] = memory_mb(svc.proc.pid)[1]
            rows[(kind, n)] = r
            first = f"{r['first_frame_s']:.2f}" if r["first_frame_s"] else "-"
            print(
                f"{kind:6} {n:5d} frames: peak RSS {r['peak_mb']:7.0f} MB, +{r['growth_mb']:6.0f} MB over the "
                f"{r['before_mb']:.0f} MB before the session (VmHWM {r['hwm_mb']:.0f}), {r['seconds']:6.1f} s, "
                f"first frame after {first} s, streamed={r['streamed']}",
                flush=True,
            )
    finally:
        if svc is not None:
            svc.close()
    for kind, lengths in (("file", args.lengths), ("folder", folder_lengths)):
        if len(lengths) >= 2:
            lo, hi = rows[(kind, min(lengths))], rows[(kind, max(lengths))]
            slope = (hi["growth_mb"] - lo["growth_mb"]) / (hi["frames"] - lo["frames"]) * 1000
            print(f"{kind}: {slope:.0f} MB per 1000 extra frames ({min(lengths)} -> {max(lengths)} frames)")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
