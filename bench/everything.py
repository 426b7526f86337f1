"""Segment everything: our generator against SAM 2's, both driven by the same predictor, in the same run.

    .venv/bin/python bench/everything.py                  # full size (sam3 preset, random weights), CPU
    .venv/bin/python bench/everything.py --preset tiny    # seconds: the quick suite's smoke run

Both sides get the same model (development-mode random weights with spread click scores, fp32), the same real
photo and the same knobs; SAM 2's ``SAM2AutomaticMaskGenerator`` (``sam2==1.1.0`` in ``.sam2``, installed by
``./run_tests.sh``) runs over our ``InteractivePredictor.predict_inst`` through ``tests/parity/sam2_adapter.py``.
The image is encoded once before the clock starts (both sides then find it in the processor's cache), so the
times are the generators': point decoding, filtering, NMS, RLE. Two settings: SAM 2's defaults, and "open"
(no IoU or stability filter, NMS at 1), where every decoded mask is resized and encoded: the worst case for
ours, which saves most by filtering before resizing. Prints the seconds of each side, the ratio ours / SAM 2's
(target <= 0.5) and the seconds per 1,000 points; the mask counts of the two sides must agree.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sam3.inference.automatic_masks import AutomaticMaskGenerator, EverythingConfig  # noqa: E402
from sam3.inference.interactive import InteractivePredictor  # noqa: E402
from tests.parity.sam2_adapter import INSTALL_HINT, build_processor, sam2_available, sam2_generator  # noqa: E402

SETTINGS = {
    "defaults": {},
    "open": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0},
}


def photo(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def run(args: argparse.Namespace) -> list[dict]:
    if not sam2_available():
        raise SystemExit(INSTALL_HINT)
    if args.threads:
        torch.set_num_threads(args.threads)
    image = photo(args.image)
    processor = build_processor(args.preset, args.seed)
    started = time.perf_counter()
    features = processor.sam_features(processor.set_image(image))  # cached: both sides reuse it
    encode_s = time.perf_counter() - started
    h, w = image.shape[:2]
    print(f"# {args.preset} preset, {args.image} {w}x{h}, {args.points_per_side}^2 points, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}")  # fmt: skip
    print(f"# image encoding (once, not timed below): {encode_s:.2f} s")
    rows = []
    for name in args.settings:
        knobs = {**SETTINGS[name], "points_per_side": args.points_per_side, "points_per_batch": args.points_per_batch}
        generator = AutomaticMaskGenerator(InteractivePredictor(processor.model.tracker), EverythingConfig(**knobs))
        sam2 = sam2_generator(processor, **knobs)
        best = {"ours": float("inf"), "sam2": float("inf")}
        counts = {}
        for _ in range(args.repeats):
            t = time.perf_counter()
            counts["ours"] = len(generator.generate((h, w), lambda box: features))
            best["ours"] = min(best["ours"], time.perf_counter() - t)
            t = time.perf_counter()
            counts["sam2"] = len(sam2.generate(image))
            best["sam2"] = min(best["sam2"], time.perf_counter() - t)
        if counts["ours"] != counts["sam2"]:
            raise SystemExit(f"{name}: {counts['ours']} masks vs SAM 2's {counts['sam2']}")
        points = args.points_per_side**2
        row = dict(
            setting=name, masks=counts["ours"], ours_s=best["ours"], sam2_s=best["sam2"],
            ratio=best["ours"] / best["sam2"], ours_per_1000=best["ours"] * 1000 / points,
            sam2_per_1000=best["sam2"] * 1000 / points,
        )  # fmt: skip
        rows.append(row)
        print(
            f"{name:9s} masks {row['masks']:4d}  ours {row['ours_s']:8.2f} s  sam2 {row['sam2_s']:8.2f} s  "
            f"ratio {row['ratio']:.2f}x  per 1000 points: ours {row['ours_per_1000']:.2f} s, "
            f"sam2 {row['sam2_per_1000']:.2f} s"
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="sam3", choices=["sam3", "tiny"])
    parser.add_argument("--image", default="astronaut", help="a scikit-image photo (default astronaut, 512x512)")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs per side")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    with torch.inference_mode():
        main()
