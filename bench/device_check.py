"""On a lent GPU: ours (SAM3_PRECISION auto, and auto + SAM3_COMPILE) against the official release
(bf16 autocast, as its README runs it) on the same random weights, in one run. One command:

    .venv/bin/python bench/device_check.py --preset sam3            # CUDA, released sizes (5-8 min on an H100/H200)
    .venv/bin/python bench/device_check.py --preset tiny --no-official   # a smoke run anywhere (CPU too)

On a lent machine (Python 3.12, its own torch, no network) ``bench/device_kit.sh`` packs here what it lacks and
runs this there in one call (``--oracle``, ``--json``, ``--deadline 420``: a run cut short keeps what it measured).

What it does:

1. unless ``--no-official``: an oracle subprocess (the official ``sam3==0.1.4`` from ``--oracle``, GPU kept)
   draws random weights with the official initialisers (seed 0), saves them as a ``sam3.pt`` (``--workdir``),
   and times set_image, a text prompt and a click under ``torch.autocast("cuda", dtype=torch.bfloat16)``;
   our model loads that ``sam3.pt`` (without the official side: our own random weights), and an fp32 CPU
   copy gives the reference outputs;
2. for each of our configurations, in ``--modes`` order (``auto``, ``auto+compile``, ``fp32``: the figures the
   issue asks for first; each row printed and, with ``--json``, recorded as it is measured; none started after
   ``--deadline`` seconds; one that raises is printed and recorded, the others go on and the run fails at its
   end): loads the weights on the device,
   applies the precision / compile (``sam3.inference.runtime``: with compile, the trunk and the per-frame
   tracking step, warmed up over the object buckets measured), warms up, then times set_image, a text prompt,
   a click on the encoded image (medians); prints the largest differences of the scores and click IoUs
   against the CPU fp32 run; then video propagation on a generated video (``--frames``, 28 at the sam3
   preset) with ``--objects`` clicked objects (1, 5, 16), without and with a text concept: frames per second
   after ``--warmup`` frames, then over the remaining frames, on CUDA, the GPU busy fraction (the union of
   the kernels' time over the wall time), kernel launches and host synchronisations per frame
   (``torch.profiler``); elsewhere (no CUDA: printed as skipped) the operators dispatched and host reads of
   tensor values per frame (``bench/video_overhead.py``'s counter);
3. ratios ours / official for the image steps (target <= 0.7x); video fps against the targets and the
   official's published figures (the official video path is not run here).

Everything runs on one device in one process tree, one side at a time.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ORACLE = ROOT / ".oracle"
ORACLE_SCRIPTS = ROOT / "tests" / "parity" / "oracle"
TEXT = "a person"


def photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # 512 x 512


def timed(fn, sync, repeats: int):
    """Median seconds of ``repeats`` calls after one untimed call; -> (seconds, last result)."""
    out = fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def image_steps(processor, context, sync, repeats: int, image) -> dict:
    """set_image (new pixels every call), a text prompt, a click: medians in seconds and the outputs."""
    click = dict(point_coords=np.array([[256.0, 200.0]]), point_labels=np.array([1]), multimask_output=True)
    counter = iter(range(1, 10_000))

    def new_image():
        k = next(counter)
        img = image.copy()
        img[0, 0, 0] = k % 256  # one pixel changed: no feature cache can answer
        img[0, 1, 0] = k // 256
        return processor.set_image(img)

    with context():
        t_enc, _ = timed(new_image, sync, repeats)
        state = processor.set_image(image)
        processor.set_confidence_threshold(0.0, state)

        def text():
            processor.reset_all_prompts(state)
            return processor.set_text_prompt(TEXT, state)

        t_txt, st = timed(text, sync, repeats)
        scores = st["scores"].float().cpu()
        t_clk, (masks, ious, _) = timed(lambda: processor.predict_inst(state, **click), sync, repeats)
    return {"set_image": t_enc, "text": t_txt, "click": t_clk, "scores": scores, "ious": np.asarray(ious)}


# Published official figures (frames per second, clicks only, H100), from the issue that asked for this check:
# SAM 3 from Meta's chart, SAM 3.1 compiled. The official video path is not run here.
OFFICIAL_FPS = {"sam3": {1: 26.5, 16: 9.8}, "sam3.1": {1: 33.8, 5: 31.0, 16: 30.2}}
TARGET_FPS = {1: 40.0, 5: 30.0, 16: 15.0}  # on an H200 at the sam3 preset


def video_run(
    model, context, sync, video: Path, objects: int, text: bool, warmup: int, profile: bool, bucket: bool | None = None
) -> dict:
    """Forward propagation with ``objects`` clicked objects (and a text concept first when ``text``); ``bucket``
    pads the objects to 1, 2, 4, ... (None: the predictor's default, on everywhere but the CPU).

    -> fps over the frames after ``warmup`` propagated ones; on CUDA with ``profile`` also the GPU busy
    fraction, kernel launches and host synchronisations per frame (torch.profiler); on any device the
    operators dispatched and the host reads of tensor values per frame (``video_overhead.OverheadCounter``).
    """
    from video_overhead import OverheadCounter, click_grid

    from sam3.inference.video_predictor import VideoPredictor

    predictor = VideoPredictor(model, bucket_objects=bucket)
    session = predictor.start_session(video)
    out: dict = {}
    try:
        with context():
            if text:
                predictor.add_prompt(session, 0, text=TEXT)
            for k, (x, y) in enumerate(click_grid(objects, session.video_hw)):
                predictor.add_prompt(session, 0, points=[[x, y]], labels=[1], obj_id=1000 + k)
            prop = predictor.propagate(session, "forward", start_frame=0)
            prop.step()  # the prompted frame (stored outputs)
            for _ in range(warmup):
                prop.step()
            left = prop.total - prop.frames_done
            if left < 2:
                raise ValueError(f"the video is too short: {left} frames left after the warm-up")
            timed_frames = left // 2  # the first half is timed, the second half counted / profiled
            sync()
            t0 = time.perf_counter()
            for _ in range(timed_frames):
                prop.step()
            sync()
            out["fps"] = timed_frames / (time.perf_counter() - t0)
            counted = left - timed_frames
            if profile:
                out.update(cuda_profile(prop, sync, counted))
            else:
                with OverheadCounter() as counter:
                    for _ in range(counted):
                        prop.step()
                out["ops"], out["reads"] = counter.ops / counted, counter.reads / counted
    finally:
        predictor.close_session(session)
    return out


def cuda_profile(prop, sync, frames: int) -> dict:
    """GPU busy fraction, kernel launches and host synchronisations per frame over ``frames`` steps."""
    from torch.profiler import DeviceType, ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(frames):
            prop.step()
        sync()
        wall_us = (time.perf_counter() - t0) * 1e6
    spans, launches, syncs = [], 0, 0
    for e in prof.events():
        if e.device_type == DeviceType.CUDA:
            spans.append((e.time_range.start, e.time_range.end))
        elif e.name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx"):
            launches += 1
        elif e.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"):
            syncs += 1
    busy, end = 0.0, float("-inf")
    for start, stop in sorted(spans):  # the union of the kernels' time ranges
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return {"gpu_busy": busy / wall_us, "launches": launches / frames, "syncs": syncs / frames}


def make_video(folder: Path, frames: int = 8) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    base = photo()
    for i in range(frames):
        Image.fromarray(np.roll(base, 8 * i, axis=1)).save(folder / f"{i:05d}.jpg", quality=95)
    return folder


# -------------------------------------------------------------------------------------------- official
def official_worker(args) -> None:
    """Inside the oracle subprocess (official package, GPU kept): the image steps under bf16 autocast."""
    os.environ["SAM3_ORACLE_GPU"] = "1"  # shims: keep the GPU, patch nothing (the release as users run it)
    sys.path.insert(0, str(ORACLE_SCRIPTS))
    import build_official
    import run_official
    import torch
    from sam3.model.sam3_image_processor import Sam3Processor

    cfg = json.loads(Path(args.config).read_text())
    ckpt = Path(args.checkpoint)
    if ckpt.is_file():
        model = build_official.build_official_image_model(cfg)
        run_official.load_checkpoint(model, str(ckpt))
    else:
        model = build_official.build_random(cfg, 0)
        torch.save(build_official.to_checkpoint_names(model.state_dict()), ckpt)
    model = model.to(args.device).eval()
    processor = Sam3Processor(
        model, resolution=cfg["vision"]["image_size"], device=args.device, confidence_threshold=0.0
    )
    sync = lambda: torch.cuda.synchronize() if args.device.startswith("cuda") else None  # noqa: E731
    mixed = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    image = photo()
    from PIL import Image

    click = dict(point_coords=np.array([[256.0, 200.0]]), point_labels=np.array([1]), multimask_output=True)
    out = {}
    with torch.inference_mode(), mixed():
        out["set_image"], _ = timed(lambda: processor.set_image(Image.fromarray(image)), sync, args.repeats)
        state = processor.set_image(Image.fromarray(image))

        def text():
            processor.reset_all_prompts(state)
            return processor.set_text_prompt(TEXT, state)

        out["text"], _ = timed(text, sync, args.repeats)
        out["click"], _ = timed(lambda: model.predict_inst(state, **click), sync, args.repeats)
    print(json.dumps(out), flush=True)


def run_official(args, cfg_path: Path, ckpt: Path) -> dict | None:
    oracle = Path(args.oracle).resolve()
    if not (oracle / "sam3" / "model_builder.py").is_file():
        print(f"official: {oracle} holds no official sam3 package (./run_tests.sh installs .oracle); skipped")
        return None
    # The official package first (our own ``sam3`` must not shadow it), then what PYTHONPATH already names (on a
    # lent machine the carried wheels' folder: bench/device_kit.sh).
    path = os.pathsep.join([str(oracle)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    env = dict(os.environ, PYTHONPATH=path, PYTHONWARNINGS="ignore", SAM3_ORACLE_GPU="1")
    cmd = [
        sys.executable,
        "-P",
        str(Path(__file__).resolve()),
        "--official-worker",
        "--config",
        str(cfg_path),
        "--checkpoint",
        str(ckpt),
        "--device",
        args.device or "cuda",
        "--repeats",
        str(args.repeats),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        print(f"official: failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda | mps | cpu (default: auto)")
    ap.add_argument("--preset", default="tiny", choices=["tiny", "sam3"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--modes", default="auto,auto+compile,fp32", help="our configurations, comma-separated, measured in this order"
    )
    ap.add_argument("--no-official", action="store_true", help="skip the official side")
    ap.add_argument("--no-video", action="store_true", help="skip the video frames-per-second step")
    ap.add_argument("--objects", default="1,5,16", help="video: clicked object counts, comma-separated")
    ap.add_argument("--no-text", action="store_true", help="video: skip the runs with a text concept")
    ap.add_argument("--frames", type=int, default=None, help="video length (default: 28 at sam3, 6 at tiny)")
    ap.add_argument("--warmup", type=int, default=None, help="propagated frames untimed (default: 4 / 1)")
    ap.add_argument("--workdir", default=None, help="keeps sam3.pt and the video frames (default: a temp folder)")
    ap.add_argument("--oracle", default=str(ORACLE), help="folder holding the official sam3 package (default .oracle)")
    ap.add_argument("--json", default=None, help="appends each measurement as a JSON line when it is made")
    ap.add_argument(
        "--deadline", type=float, default=None, help="seconds from the start after which no measurement starts"
    )
    ap.add_argument("--official-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.official_worker:
        official_worker(args)
        return {}

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # video_overhead, next to this file
    import torch

    from sam3.build import build_image_model
    from sam3.config import get_config
    from sam3.device import cpu_info, resolve_device, resolve_precision, synchronize
    from sam3.inference.processor import Sam3Processor

    device = resolve_device(args.device)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="sam3_device_check_"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt, cfg_path = work / f"sam3-{args.preset}.pt", work / "cfg.json"
    cfg_path.write_text(json.dumps(get_config(args.preset).to_dict()))
    off = None
    if not args.no_official and device.type == "cuda":
        off = run_official(args, cfg_path, ckpt)  # draws and saves the weights, then times the official side
    torch.manual_seed(0)
    if ckpt.is_file():
        cpu_model = build_image_model(checkpoint_path=ckpt, preset=args.preset, device="cpu", load_from_HF=False)
    else:
        cpu_model = build_image_model(preset=args.preset, random_weights=True, device="cpu", load_from_HF=False)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"device {name}; preset {args.preset}; torch {torch.__version__}; host CPU {cpu_info().describe()}")
    image, sync = photo(), (lambda: synchronize(device))
    reference = image_steps(Sam3Processor(cpu_model), lambda: torch.inference_mode(), lambda: None, 1, image)
    full = args.preset != "tiny"
    n_frames = args.frames or (28 if full else 6)
    warmup = args.warmup if args.warmup is not None else (4 if full else 1)
    frames = make_video(work / "frames", n_frames) if not args.no_video else None
    counts = [int(x) for x in args.objects.split(",")]
    profile = device.type == "cuda"
    if frames is not None and not profile:
        print(
            f"video: GPU busy fraction, kernel launches and host syncs need CUDA ({device.type} here): skipped;"
            " operators dispatched and host reads of tensor values per frame are counted instead"
        )

    started = time.monotonic()
    record = Record(args.json)
    if off is not None:
        record.write(kind="official", **off)

    def late(what: str) -> bool:
        """Past ``--deadline``: ``what`` is not started (what was measured is printed and recorded already)."""
        if args.deadline is None or time.monotonic() - started < args.deadline:
            return False
        print(f"deadline ({args.deadline:.0f} s) passed: {what} not measured", flush=True)
        return True

    rows, failures = {}, []

    def attempt(what: str, fn, *fn_args):
        """``fn(*fn_args)``, or None when it raises: printed and recorded, the run goes on (and fails at its end)."""
        try:
            return fn(*fn_args)
        except Exception as exc:  # noqa: BLE001 -- on a lent machine one failure must not cost the other figures
            failures.append(what)
            print(f"{what} failed:\n{traceback.format_exc()}", flush=True)
            record.write(kind="error", what=what, error=f"{type(exc).__name__}: {exc}")
            return None

    for mode in args.modes.split(","):
        if late(mode):
            continue
        want, compile_ = mode.split("+")[0], mode.endswith("+compile")
        try:
            precision = resolve_precision(want, device)
        except ValueError as exc:
            print(f"{mode}: {exc}")
            continue
        video_objects = max(counts) if frames is not None else None
        ready = attempt(f"{mode} set-up", ready_model, cpu_model, device, precision, compile_, video_objects)
        if ready is None:
            continue
        model, warm = ready
        ctx = precision.context
        r = rows[mode] = {"video": {}}
        steps = attempt(f"{mode} image steps", image_steps, Sam3Processor(model), ctx, sync, args.repeats, image)
        if steps is not None:
            r.update(steps)
            dscore = (r["scores"] - reference["scores"]).abs().max().item() if r["scores"].numel() else 0.0
            diou = float(np.abs(r["ious"] - reference["ious"]).max())
            print(
                f"{mode:>14} ({precision.mode}): warm-up {warm:.1f} s  set_image {r['set_image'] * 1e3:8.1f} ms  "
                f"text {r['text'] * 1e3:7.1f} ms  click {r['click'] * 1e3:6.1f} ms"
                + f"  max|score - cpu fp32| {dscore:.2e}  max|iou - cpu fp32| {diou:.2e}",
                flush=True,
            )
            times = {k: r[k] for k in ("set_image", "text", "click")}
            record.write(kind="image", mode=mode, warm_up=warm, score_diff=dscore, iou_diff=diou, **times)
        for text in (False,) if args.no_text or frames is None else (False, True):
            for n in counts if frames is not None else ():
                what = f"{mode} video {n} objects{' + text' if text else ''}"
                if late(what):
                    continue
                bucket = True if compile_ else None
                v = attempt(what, video_run, model, ctx, sync, frames, n, text, warmup, profile, bucket)
                if v is None:
                    continue
                r["video"][(n, text)] = v
                print(
                    f"{'':>14}  video {n:>2} objects{' + text' if text else '       '}: {video_line(v, n, full)}",
                    flush=True,
                )
                record.write(kind="video", mode=mode, objects=n, text=text, **v)
        del model
        torch.cuda.empty_cache() if device.type == "cuda" else None

    if off is None:
        print(
            "official side skipped"
            + (
                " (--no-official)"
                if args.no_official
                else " (it runs on CUDA only)"
                if device.type != "cuda"
                else " (failed, above)"
            )
        )
    else:
        print(
            f"{'official bf16':>14}: set_image {off['set_image'] * 1e3:8.1f} ms  text {off['text'] * 1e3:7.1f} ms  "
            f"click {off['click'] * 1e3:6.1f} ms"
        )
        for mode, r in rows.items():
            if "set_image" in r:
                ratios = "  ".join(f"{k} {r[k] / off[k]:.2f}x" for k in ("set_image", "text", "click"))
                print(f"ours {mode} / official: {ratios}   (target <= 0.7x)")
    if failures:
        raise RuntimeError(f"{len(failures)} measurement(s) failed (above): {', '.join(failures)}")
    return rows


class Record:
    """``--json``: one JSON object a line, appended as each measurement is made (a run cut short keeps them)."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None

    def write(self, **fields) -> None:
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(fields) + "\n")


def ready_model(cpu_model, device, precision, compile_: bool, video_objects: int | None):
    """A device copy of ``cpu_model`` in ``precision`` (compiled with ``compile_``), warmed up: -> (model, warm-up
    seconds). With compile and ``video_objects``, also the frame step's graphs for every object bucket up to it."""
    from sam3.inference.runtime import prepare_model, warm_up, warm_up_video

    model = copy.deepcopy(cpu_model).to(device).eval()
    prepare_model(model, precision, compile=compile_)
    warm = warm_up(model, precision)
    if compile_ and video_objects:
        warm += warm_up_video(model, precision, max_objects=video_objects)
    return model, warm


def video_line(v: dict, objects: int, full: bool) -> str:
    """One video row: fps (and, at the sam3 preset, against the targets and the published official figures)."""
    parts = [f"{v['fps']:7.2f} fps"]
    if "gpu_busy" in v:
        parts.append(f"GPU busy {100 * v['gpu_busy']:.0f}% (target >= 70%)")
        parts.append(f"{v['launches']:.0f} kernel launches/frame, {v['syncs']:.1f} host syncs/frame")
    else:
        parts.append(f"{v['ops']:.0f} operators/frame, {v['reads']:.1f} host reads/frame (target <= 4)")
    if full:
        if objects in TARGET_FPS:
            parts.append(f"target {TARGET_FPS[objects]:.0f} fps")
        for name, figures in OFFICIAL_FPS.items():
            if objects in figures:
                parts.append(
                    f"{v['fps'] / figures[objects]:.2f}x official {name} (published H100 {figures[objects]} fps)"
                )
    return "  ".join(parts)


if __name__ == "__main__":
    main()
