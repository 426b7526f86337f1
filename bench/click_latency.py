"""Our click on an already encoded image, at the released size: the fast path against the plain one.

    .venv/bin/python bench/click_latency.py                  # sam3 preset, random weights, 2-4 min on 2 cores
    .venv/bin/python bench/click_latency.py --threads 1 --repeats 20

Ours only (no oracle): random weights at the chosen preset, one photo encoded once, then clicks
(one positive point, ``multimask_output=True``, as ``image_latency.py`` step 3) alternating between

* ``plain``: features without the per-image precompute (``prepare_features(..., precompute_tokens=False)``):
  every click computes the dense PE and the first two-way block's image-only projections, and the decoder
  upsamples with its NCHW transposed convolutions;
* ``fast``: the served path (``SamImageFeatures.tokens`` precomputed with the image, the skips in the order
  of the decoder's per-pixel upscaling, ``fast_upscale``);
* ``fast+bool``: the same with ``bool_masks=True`` (no float32 mask write);

and the post-processing resize of the 3 low-res masks both ways (3 channels vs a batch of one-channel maps).
Prints medians (wall and process CPU), ratios, and the stages of the fast click.
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

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "data" / "images" / "truck.jpg"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sam3", choices=["sam3", "tiny"])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--image", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch
    import torch.nn.functional as F

    from sam3.build import build_image_model
    from sam3.device import cpu_info
    from sam3.inference.processor import Sam3Processor
    from sam3.ops.masks import fill_small_components

    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.image) if args.image else PHOTO
    if path.is_file():
        rgb = np.asarray(Image.open(path).convert("RGB"))
    else:
        from skimage import data

        rgb = data.astronaut()
    h, w = rgb.shape[:2]
    load0 = os.getloadavg()[0]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_image_model(preset=args.preset, random_weights=True, device="cpu", load_from_HF=False)
    processor = Sam3Processor(model)
    predictor = processor._interactive
    build = time.perf_counter() - t0
    with torch.inference_mode():
        t0 = time.perf_counter()
        state = processor.set_image(rgb)
        encode = time.perf_counter() - t0
        fast = processor.sam_features(state)
        raw = model.encode_image  # plain features: the same tracker levels without the precompute
        from sam3.inference.transforms import preprocess, to_uint8_chw

        pix = preprocess(to_uint8_chw(rgb), model.config.image_size, model.config.image_mean, model.config.image_std)
        plain = predictor.prepare_features(raw(pix), precompute_tokens=False)
    click = dict(point_coords=[[w * 0.5, h * 0.5]], point_labels=[1], multimask_output=True)
    runs = {
        "plain": lambda: predictor.predict_inst(plain, (h, w), **click),
        "fast": lambda: predictor.predict_inst(fast, (h, w), **click),
        "fast+bool": lambda: predictor.predict_inst(fast, (h, w), **click, bool_masks=True),
    }
    low = torch.randn(1, 3, 4 * model.config.feature_size, 4 * model.config.feature_size)
    runs["resize 3 channels"] = lambda: F.interpolate(low, (h, w), mode="bilinear", align_corners=False)
    runs["resize as batch"] = lambda: F.interpolate(
        low.reshape(3, 1, *low.shape[-2:]), (h, w), mode="bilinear", align_corners=False
    )
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    with torch.inference_mode():
        for fn in runs.values():
            fn()  # warm-up
        for i in range(args.repeats):
            for name in list(runs) if i % 2 == 0 else list(runs)[::-1]:
                t0, c0 = time.perf_counter(), time.process_time()
                runs[name]()
                times[name].append((time.perf_counter() - t0, time.process_time() - c0))
        # stages of the fast click
        enc, dec = model.tracker.sam_prompt_encoder, model.tracker.sam_mask_decoder
        size = enc.image_size
        coords = torch.tensor([[[w * 0.5 * size / w, h * 0.5 * size / h]]])
        labels = torch.ones(1, 1, dtype=torch.int32)
        stages: dict[str, list[float]] = {}

        def clock(name, fn, *a, **kw):
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            stages.setdefault(name, []).append(time.perf_counter() - t0)
            return out

        for _ in range(args.repeats):
            sparse, dense = clock("prompt encoder", enc, points=(coords, labels), boxes=None, masks=None)
            lr, _, _, _ = clock(
                "mask decoder",
                dec,
                image_embeddings=fast.image_embed,
                image_pe=None,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
                repeat_image=False,
                high_res_features=fast.skips,
                image_tokens=fast.tokens,
                fast_upscale=True,
            )
            filled = clock("hole filling", fill_small_components, lr, 256.0, 0.0, 0.0)
            up = clock(
                "resize (batched)",
                lambda x: F.interpolate(x.reshape(3, 1, *x.shape[-2:]), (h, w), mode="bilinear", align_corners=False),
                filled,
            )
            clock("threshold to bool + numpy", lambda x: (x > 0).numpy(), up)

    med = lambda xs, c: statistics.median(x[c] for x in xs) * 1e3  # noqa: E731
    print(
        f"preset {args.preset}, image {w}x{h}, threads {torch.get_num_threads()}, CPU {cpu_info().describe()}, "
        f"torch {torch.__version__}; load avg {load0:.1f} -> {os.getloadavg()[0]:.1f} ({os.cpu_count()} cpus); "
        f"build {build:.0f} s, encode {encode:.1f} s; {args.repeats} alternating runs, medians"
    )
    print(f"{'':26s}{'wall ms':>10s}{'CPU ms':>10s}{'wall / plain':>14s}")
    for name, xs in times.items():
        base = times["plain"] if not name.startswith("resize") else times["resize 3 channels"]
        print(f"{name:26s}{med(xs, 0):10.1f}{med(xs, 1):10.1f}{med(xs, 0) / med(base, 0):14.2f}")
    print("stages of the fast click (wall ms, medians):")
    for name, xs in stages.items():
        print(f"  {name:28s}{statistics.median(xs) * 1e3:8.1f}")


if __name__ == "__main__":
    main()
