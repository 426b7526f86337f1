"""How long a click waits while a video propagation runs: the fair-sharing check of the tracking service.

One ``uvicorn server.main:app`` (tiny preset, random weights, CPU; :class:`video_memory.Service`) opens a
generated 1280x720 clip, takes a click and starts a streamed forward propagation. While frames stream in, an
image click (``/predict/mask`` on a cached ``image_id``) is sent every ``--every`` seconds; the same clicks are
then timed with no propagation running. Prints medians and the propagation's own per-frame time, so the
figure reads as "one frame plus the click".

    python bench/click_during_propagation.py --frames 200 --clicks 15
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from video_memory import REPO, Service, write_clip  # noqa: E402


def photo_png() -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def timed_click(svc: Service, image_id: str) -> float:
    t0 = time.perf_counter()
    r = svc.client.post("/predict/mask", data={"image_id": image_id, "points": "[[320, 240]]"})
    r.raise_for_status()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--clicks", type=int, default=15)
    ap.add_argument("--every", type=float, default=1.0, help="seconds between clicks during the propagation")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="click_prop_"))
    clip = write_clip(work / "clip.mp4", args.frames)
    svc = Service(REPO, work, args.threads)
    try:
        first = svc.client.post(
            "/predict/mask", files={"image": ("p.png", photo_png(), "image/png")}, data={"points": "[[320, 240]]"}
        )
        first.raise_for_status()
        image_id = first.headers["X-Image-ID"]
        idle = [timed_click(svc, image_id) for _ in range(args.clicks)]

        svc.client.post("/track/start", json={"video_path": str(clip), "session_id": "b"}).raise_for_status()
        svc.client.post(
            "/track/prompt", json={"session_id": "b", "frame_idx": 0, "points": [[200, 360]]}
        ).raise_for_status()
        frame_times: list[float] = []
        started = threading.Event()
        done = threading.Event()

        def propagate() -> None:
            body = {"session_id": "b", "direction": "forward", "stream": True, "mask_format": "rle"}
            last = time.perf_counter()
            with svc.client.stream("POST", "/track/propagate", json=body) as r:
                for raw in r.iter_lines():
                    if json.loads(raw)["event"] == "frame":
                        now = time.perf_counter()
                        frame_times.append(now - last)
                        last = now
                        started.set()
            done.set()

        thread = threading.Thread(target=propagate, daemon=True)
        thread.start()
        started.wait(600)
        during = []
        while len(during) < args.clicks and not done.is_set():
            during.append(timed_click(svc, image_id))
            time.sleep(args.every)
        svc.client.post("/track/cancel", json={"session_id": "b"})
        thread.join(600)
    finally:
        svc.close()
    per_frame = statistics.median(frame_times[1:]) if len(frame_times) > 1 else float("nan")
    print(f"service: {REPO}; tiny preset, CPU, {args.threads} thread(s), 1280x720 clip of {args.frames} frames")
    print(
        f"click on a cached image, idle:            median {statistics.median(idle) * 1000:8.1f} ms ({len(idle)} clicks)"
    )
    if during:
        print(
            f"click during a streamed propagation:      median {statistics.median(during) * 1000:8.1f} ms, "
            f"max {max(during) * 1000:.1f} ms ({len(during)} clicks)"
        )
    print(f"propagation, time per streamed frame:     median {per_frame * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
