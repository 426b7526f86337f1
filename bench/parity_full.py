"""Full-size parity and speed against the official ``sam3==0.1.4``: the table, then the timings.

Usage (from the repository root; the oracle must be installed in ``.oracle``, see ``run_tests.sh``)::

    .venv/bin/python bench/parity_full.py                  # sam3 preset, 1008 px: about 10-15 min on 2 cores
    .venv/bin/python bench/parity_full.py --preset tiny    # the same at the tiny preset, under a minute

What it does (``tests/parity/harness.py`` holds the machinery, shared with ``tests/parity/test_image_parity.py``):

1. An oracle subprocess builds the official image model (with the tracker) at the preset's sizes, draws
   deterministic random weights, saves them as ``sam3.pt`` in ``--workdir`` and runs the official
   ``Sam3Processor`` on a real photo: ``set_image``, a text prompt, text + box, box only, then
   ``--repeat-text`` timed text prompts, and eight ``predict_inst`` click cases. It saves every intermediate.
2. This process loads that ``sam3.pt`` into our model and runs the same steps with our ``Sam3Processor``.
   The two never run at the same time (on a 2-core machine they would only measure each other).

Printed: one row per compared tensor (max |ours - official|, max |official|, pass at
``max|diff| <= 1e-4 * max(1, max|official|)``), then the image-encoding time (``set_image``; one run each:
a full-size forward takes about 90 s here) and the text-prompt time (median of ``--repeat-text`` runs; our
text cache is cleared before each run so both sides encode the text), with the ratio ours / official.
Exit status 1 when any row fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.parity import harness  # noqa: E402

SHARED_PHOTO = ROOT.parent / "shared" / "data" / "images" / "groceries.jpg"


def _photo(path: str | None, workdir: Path) -> tuple[Path, str]:
    """A PNG copy of the photo (lossless: both processes decode identical pixels) and where it came from."""
    from PIL import Image

    if path:
        image, source = Image.open(path).convert("RGB"), path
    elif SHARED_PHOTO.is_file():
        image, source = Image.open(SHARED_PHOTO).convert("RGB"), str(SHARED_PHOTO)
    else:
        from skimage import data

        image, source = Image.fromarray(data.astronaut()), "skimage.data.astronaut()"
    out = workdir / "photo.png"
    image.save(out)
    return out, f"{source} {image.size[0]}x{image.size[1]}"


def _ratio(ours: float | None, official: float | None) -> str:
    if not ours or not official:
        return "n/a"
    r = ours / official
    return f"{r:.2f}x the official time ({'faster' if r < 1 else 'slower'})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sam3", help="config preset (sam3 = the released sizes)")
    ap.add_argument("--image", help="photo to use (default ../shared/data/images/groceries.jpg, else astronaut)")
    ap.add_argument("--workdir", help="where sam3.pt and the official results go (default: a temp folder)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    ap.add_argument("--repeat-text", type=int, default=3, help="timed text-prompt runs per side")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--failures-only", action="store_true", help="print only the failing rows")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="sam3_parity_") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        photo, source = _photo(args.image, workdir)
        print(f"preset {args.preset}, photo {source}, {args.threads} threads, workdir {workdir}", flush=True)
        t0 = time.perf_counter()
        report = harness.run_parity(
            args.preset,
            workdir,
            photo,
            seed=args.seed,
            threads=args.threads,
            full_plan=True,
            repeat_text=args.repeat_text,
        )
        wall = time.perf_counter() - t0

    print(report.table(only_failures=args.failures_only))
    failed = report.failures
    print(
        f"\n{len(report.rows) - len(failed)}/{len(report.rows)} comparisons pass"
        + (f"; FAILED: {', '.join(r.name for r in failed[:20])}" if failed else "")
    )
    if report.meta.get("warnings"):
        print("oracle warnings:", "; ".join(report.meta["warnings"]))

    off, ours = report.timings["official"], report.timings["ours"]
    off_text = off.get("text_prompt_median")
    ours_text = statistics.median(ours["text_prompt_runs"]) if ours.get("text_prompt_runs") else None
    fmt = lambda s: f"{s:8.2f} s" if s else "     n/a"  # noqa: E731
    print(f"\ntimings ({args.threads} threads, same run, one side after the other)")
    enc_off, enc_ours = off.get("set_image"), ours.get("set_image")
    print(
        f"  image encoding (set_image, 1 run)   official {fmt(enc_off)}   ours {fmt(enc_ours)}"
        f"   ours = {_ratio(enc_ours, enc_off)}"
    )
    print(
        f"  text prompt (median of {args.repeat_text})          official {fmt(off_text)}   ours {fmt(ours_text)}"
        f"   ours = {_ratio(ours_text, off_text)}"
    )
    print(
        f"  model build / load                  official {fmt(off.get('build'))}   ours {fmt(ours.get('load'))}"
        "   (official: random init + save; ours: load of that sam3.pt)"
    )
    print(f"  total wall time {wall:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
