"""Image-prompting latency: our ``Sam3Processor`` against the official ``sam3==0.1.4`` one, same weights.

Usage (from the repository root; the oracle must be installed in ``.oracle``, see ``run_tests.sh``)::

    .venv/bin/python bench/image_latency.py --preset tiny            # about a minute
    .venv/bin/python bench/image_latency.py                          # released sizes, about 10 min on 2 cores
    .venv/bin/python bench/image_latency.py --preset tiny --profile  # + where our click's time goes

How it runs:

1. An oracle subprocess (``PYTHONPATH=.oracle python -P bench/latency_sides.py ...``; the
   official package is ``sam3`` there, with the CPU shims of ``tests/parity/oracle``) builds the official
   image model with instance interactivity at the sizes of the chosen preset, draws deterministic random
   weights (``build_official.build_random``) and saves them as a ``sam3.pt`` (kept in ``--workdir`` and
   reused by later runs with the same preset and seed). It then waits for commands on stdin.
2. This process loads that ``sam3.pt`` into our model. Both sides then run the same calls, alternating
   call by call (official, ours, ours, official, ...), each timed inside its own process. Both models are
   resident, but only one computes at a time, and a burst of load from elsewhere on a shared machine
   hits both sides instead of one.

Steps (the same PIL photo on both sides; "new image" = the photo with one pixel changed, so neither side
can reuse features):

1. ``set_image``: image encoding. The official processor runs pre-processing, the ViT and both necks; ours
   (``lazy_necks``, the default) pre-processing and the ViT only, and each neck on its first use, so compare
   steps 4 and 4b, which include the encoding, rather than this row.
2. a text prompt on the encoded image: (a) a prompt not seen before (text encoder + detector), (b) the
   same prompt again (ours answers the text from its text cache; the official re-encodes it).
3. a click (``predict_inst``, one positive point, ``multimask_output=True``) on the encoded image.
4. a click on a new image (``set_image`` + the click).
4b. a text prompt on a new image (``set_image`` + the repeated prompt: ours answers its text from the text cache).
5. ours only: ``set_image`` of pixels already encoded (feature-cache hit); compared with the official
   ``set_image`` of step 1, which is what the official processor does for a repeated image.

Only medians and ratios are printed (shared, noisy machine). Cheap steps get one untimed warm-up call on
each side; the image encoding gets none at the released size (one forward is about 90 s here). Random
weights give each prompt its own score level (around 0.4, so the default 0.5 keeps nothing): in an untimed
pass the official side picks, per prompt, the threshold that keeps ``--keep`` queries (a few objects, as a
real prompt would), and both sides use it. Kept counts and click IoUs are printed as a check that both
sides did the same work. Each step also reports the CPU time of its process: on a machine shared with
other jobs it moves less than the wall time (but spin-waiting threads count in it too).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_sides import ORACLE, ROOT, Side, click_kwargs, log, start_oracle  # noqa: E402

PHOTO = ROOT.parent / "shared" / "data" / "images" / "truck.jpg"

# Prompts: the first is the warm-up, "truck" is the repeated one, the rest are new.
WARMUP_PROMPT, SAME_PROMPT = "object", "truck"
NEW_PROMPTS = [
    "a wheel",
    "window",
    "the road",
    "a tree",
    "car door",
    "sky",
    "person",
    "tire",
    "headlight",
    "bumper",
    "grass",
    "building",
    "a white truck",
    "mirror",
    "fence",
]

STEPS = [
    ("set_image", "1  set_image (encode)"),
    ("text_new", "2a text prompt, new text"),
    ("text_same", "2b text prompt, same text again"),
    ("click_seen", "3  click on encoded image"),
    ("click_new", "4  click on new image (incl. encode)"),
    ("text_new_image", "4b text on new image (incl. encode)"),
    ("set_image_cached", "5  set_image, same pixels again"),
]


# ------------------------------------------------------------------------------------------- our side
def load_ours(args, ckpt: Path, image: Path):
    import torch

    from sam3.build import build_image_model
    from sam3.inference.processor import Sam3Processor

    if args.threads:
        torch.set_num_threads(args.threads)
    log(f"ours: loading {ckpt}")
    t0 = time.perf_counter()
    model = build_image_model(checkpoint_path=ckpt, preset=args.preset, device="cpu", load_from_HF=False)
    from sam3.device import cpu_info, resolve_precision
    from sam3.inference.runtime import prepare_model

    precision = resolve_precision(args.precision, "cpu")
    report = prepare_model(model, precision)
    log(
        f"ours: precision {precision.mode} ({precision.reason}); {len(report.quantized)} int8 linears; "
        f"CPU {cpu_info().describe()}"
    )
    build_s = time.perf_counter() - t0
    processor = Sam3Processor(model)
    return Side(processor, processor.predict_inst, str(image), precision.context), build_s


# ------------------------------------------------------------------------------------------- the run
def run(sides: dict, n: int, n_enc: int, full: bool, keep: int) -> dict:
    """The steps, each call alternating between the sides. -> {side: {step: [seconds]}, "extra": ...}."""
    times = {name: {} for name in sides}
    extra = {name: {"kept": {}, "click_iou": None} for name in sides}
    counter = iter(range(1, 10_000))  # image variants: a fresh k is a new image on both sides

    def both(step, i, op, *a, warmup=False):
        order = list(sides) if i % 2 == 0 else list(sides)[::-1]
        out = {}
        for name in order:
            seconds, ex = getattr(sides[name], op)(*a)
            out[name] = ex
            if not warmup:
                times[name].setdefault(step, []).append(seconds)
        if not warmup:
            log(f"  {step} {i + 1}: " + "  ".join(f"{k} {times[k][step][-1][0] * 1e3:.1f} ms" for k in sides))
        return out

    log("step 1: set_image")
    if not full:
        both("set_image", 0, "set_image", next(counter), warmup=True)
    for i in range(n_enc):
        both("set_image", i, "set_image", 0 if i == 0 else next(counter))

    log("step 2: text prompts")
    prompts = NEW_PROMPTS[: n - 1] + [SAME_PROMPT]  # SAME_PROMPT is new to ours the first time
    log(f"  choosing per-prompt thresholds on the official side (untimed, {len(prompts) + 1} groundings)")
    thresholds = sides["official"].pick_thresholds([WARMUP_PROMPT, *prompts], keep)[1]
    both("text", 0, "text", WARMUP_PROMPT, thresholds[WARMUP_PROMPT][0], warmup=True)
    for i, p in enumerate(prompts):
        for name, kept in both("text_new", i, "text", p, thresholds[p][0]).items():
            extra[name]["kept"][p] = kept
    for i in range(n):
        both("text_same", i, "text", SAME_PROMPT)

    log("step 3: clicks on the encoded image")
    both("click_seen", 0, "click", 0, warmup=True)
    for i in range(n):
        for name, iou in both("click_seen", i, "click", i).items():
            extra[name]["click_iou"] = extra[name]["click_iou"] or iou

    log("step 4: clicks on new images")
    for i in range(n_enc):
        both("click_new", i, "click_new", next(counter))

    log("step 4b: a text prompt on new images")
    for i in range(n_enc):
        both("text_new_image", i, "text_new", next(counter), SAME_PROMPT)

    log("step 5: our set_image of the same pixels (cache hit)")
    for _ in range(n):
        seconds, _ = sides["ours"].set_image(0)
        times["ours"].setdefault("set_image_cached", []).append(seconds)
    return {"times": times, "extra": extra, "thresholds": thresholds}


def profile_click(side: Side, n: int) -> None:
    """Where our click on an encoded image spends its time: the stages run one by one, then torch.profiler."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from sam3.ops.masks import fill_small_components

    state, (h, w) = side.state, (side.h, side.w)
    kw = click_kwargs(h, w)
    tracker = side.processor.model.tracker
    enc, dec = tracker.sam_prompt_encoder, tracker.sam_mask_decoder
    feats = side.processor.sam_features(state)
    size = enc.image_size
    coords = torch.tensor(kw["point_coords"])[None] * torch.tensor([size / w, size / h])
    labels = torch.tensor(kw["point_labels"])[None]
    stages: dict[str, list[float]] = {}

    def clock(name, fn, *args, **kwargs):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        stages.setdefault(name, []).append((time.perf_counter() - t0, time.process_time() - c0))
        return out

    def resize_threshold(logits):
        b, k, s1, s2 = logits.shape  # as predict_inst does: the K masks as a batch of one-channel maps
        up = F.interpolate(logits.reshape(b * k, 1, s1, s2), (h, w), mode="bilinear", align_corners=False)
        return (up > 0).float().reshape(k, h, w).numpy()

    with torch.inference_mode(), side.context():
        for i in range(n + 1):
            sparse, dense = clock("prompt encoder", enc, points=(coords, labels), boxes=None, masks=None)
            # the dense PE and the first block's image-only projections come precomputed with the image
            low, _, _, _ = clock(
                "mask decoder (precomputed image tokens)",
                dec,
                image_embeddings=feats.image_embed,
                image_pe=None,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
                repeat_image=False,
                high_res_features=feats.skips,
                image_tokens=feats.tokens,
                fast_upscale=True,
            )
            filled = clock("hole filling (CC labelling)", fill_small_components, low, 256.0, 0.0, 0.0)
            clock(f"resize to {w}x{h} + threshold + numpy", resize_threshold, filled)
            clock("total predict_inst (public call)", side.predict_inst, state, **kw)
            if i == 0:
                stages.clear()  # warm-up
    print(f"\nOur click on an encoded image, stage by stage (medians of {n} runs, ms):")
    print(f"  {'stage':45s} {'wall':>9s} {'CPU':>9s}")
    for name, xs in stages.items():
        wall, cpu = (statistics.median(x[col] for x in xs) * 1e3 for col in (0, 1))
        print(f"  {name:45s} {wall:9.1f} {cpu:9.1f}")

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof, side.context():
        for _ in range(3):
            side.predict_inst(state, **kw)
    print("\ntorch.profiler, our predict_inst x3 (totals over the 3 calls), top ops by self CPU time:")
    print(
        prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=30, max_shapes_column_width=70
        )
    )


def _cpu() -> str:
    from sam3.device import cpu_info

    return cpu_info().describe()


def report(res: dict, info: dict, args, image: Path, n: int, n_enc: int) -> str:
    ot, ft = res["times"]["ours"], res["times"]["official"]
    h, w = info["ours"]["hw"]

    def med(xs, col):  # median in ms of one column (0 wall, 1 CPU) of [[wall, cpu], ...]
        return statistics.median(x[col] for x in xs) * 1e3 if xs else None

    lines = [
        (
            f"preset={args.preset}  image={image.name} {w}x{h}  threads ours={info['ours']['threads']} "
            f"official={info['official']['threads']}  torch {info['ours']['torch']}  load avg at start/end "
            f"{info['load'][0]:.1f}/{info['load'][1]:.1f} ({os.cpu_count()} cpus)"
        ),
        f"precision: ours {args.precision}, official {args.official_precision}; CPU {_cpu()}",
        (
            f"timed calls per step: {n} (steps 1 and 4: {n_enc}); per-prompt thresholds keep {args.keep} queries "
            f"(smallest score gap at a threshold: {min(g for _, g in res['thresholds'].values()):.2e})"
        ),
        "medians in ms; wall = elapsed time, CPU = CPU time of the process (all its threads)",
        "",
        f"{'step':38s} {'ours':>9s} {'official':>9s} {'ratio':>7s}   {'ours CPU':>9s} {'off. CPU':>9s} {'ratio':>7s}",
    ]
    for key, label in STEPS:
        fk = "set_image" if key == "set_image_cached" else key
        cells = []
        for col in (0, 1):
            o, f = med(ot.get(key), col), med(ft.get(fk), col)
            star = "*" if key == "set_image_cached" else " "
            cells.append(f"{o:9.1f} {f:8.1f}{star} {o / f:7.3f}")
        lines.append(f"{label:38s} {cells[0]}   {cells[1]}")
    ex = res["extra"]
    lines += [
        "ratio = ours / official (below 1: ours is faster).",
        "* the official processor re-encodes a repeated image: compared with its step 1.",
        (
            f"model load (not a step): ours {info['ours']['build_s']:.1f} s, official build + weights "
            f"{info['official']['build_s']:.1f} s"
        ),
        "",
        "check that both sides did the same work:",
        f"  kept per prompt  ours     {ex['ours']['kept']}",
        f"                   official {ex['official']['kept']}",
        (
            f"  click IoU preds  ours {np.round(ex['ours']['click_iou'], 5).tolist()}  "
            f"official {np.round(ex['official']['click_iou'], 5).tolist()}"
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sam3", choices=["sam3", "tiny"])
    ap.add_argument("--repeats", type=int, default=5, help="timed calls of the cheap steps (default 5)")
    ap.add_argument(
        "--encode-repeats",
        type=int,
        default=None,
        help="timed image encodings in steps 1 and 4 (default 1 at sam3, else --repeats)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads on both sides (0: torch default)")
    ap.add_argument("--image", default=None, help=f"photo (default {PHOTO} if present, else skimage astronaut)")
    ap.add_argument("--keep", type=int, default=3, help="queries each prompt's threshold keeps (default 3)")
    ap.add_argument("--seed", type=int, default=0, help="random-weight seed (official initialisers)")
    ap.add_argument("--workdir", default="/tmp/sam3_bench", help="keeps sam3-<preset>-seed<seed>.pt between runs")
    ap.add_argument("--profile", action="store_true", help="also break down and profile our click")
    ap.add_argument(
        "--precision",
        default="fp32",
        choices=["auto", "fp32", "bf16", "fp16", "int8"],
        help="our side's SAM3_PRECISION (default fp32; the policy of sam3.device on this CPU)",
    )
    ap.add_argument(
        "--official-precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="the official side: fp32, or bf16 CPU autocast (only worth timing with native bf16)",
    )
    args = ap.parse_args()
    if not (ORACLE / "sam3" / "model_builder.py").is_file():
        raise SystemExit("the official oracle is not installed in .oracle; run ./run_tests.sh once (it installs it)")
    if not 1 <= args.repeats <= len(NEW_PROMPTS) + 1:
        raise SystemExit(f"--repeats must be in 1..{len(NEW_PROMPTS) + 1}")
    full = args.preset == "sam3"
    n, n_enc = args.repeats, args.encode_repeats or (1 if full else args.repeats)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.image:
        image = Path(args.image).resolve()
    elif PHOTO.is_file():
        image = PHOTO
    else:
        from skimage import data

        image = workdir / "astronaut.png"
        Image.fromarray(data.astronaut()).save(image)
    sys.path.insert(0, str(ROOT))
    from sam3.config import get_config

    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    ckpt = workdir / f"sam3-{args.preset}-seed{args.seed}.pt"
    log(f"official side (subprocess), preset {args.preset}")
    official, official_build = start_oracle(args, get_config(args.preset).to_dict(), image, ckpt, workdir)
    try:
        ours, ours_build = load_ours(args, ckpt, image)
        sides = {"official": official, "ours": ours}
        res = run(sides, n, n_enc, full, args.keep)
        info = {
            name: {**side.info()[1], "build_s": b}
            for (name, side), b in zip(sides.items(), (official_build, ours_build))
        }
    finally:
        official.proc.stdin.close()
        official.proc.wait()
    info["load"] = (load0, os.getloadavg()[0])
    print(report(res, info, args, image, n, n_enc), flush=True)
    if args.profile:
        profile_click(ours, n)
    log(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
