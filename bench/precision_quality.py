"""The reduced-precision yardstick and each of our modes, on one photo (see tests/parity/precision_quality.py).

    .venv/bin/python bench/precision_quality.py --preset tiny                      # 5-10 min on 2 cores
    .venv/bin/python bench/precision_quality.py --preset sam3 --modes bf16,int8    # where bf16 is native

Prints, per pair, kept-set agreement, max score difference, smallest kept-mask IoU and smallest click-mask IoU:
the official model under CPU bf16 autocast vs the official fp32 (the yardstick), ours fp32 vs the official
fp32, and ours in each mode vs ours fp32. Needs the oracle in ``.oracle``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "data" / "images" / "truck.jpg"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "sam3"])
    ap.add_argument("--image", default=str(PHOTO))
    ap.add_argument("--modes", default="bf16,int8")
    ap.add_argument("--workdir", default="/tmp/sam3_precision_quality")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from sam3.device import cpu_info
    from tests.parity.precision_quality import measure

    work = Path(args.workdir) / args.preset
    result = measure(args.preset, work, Path(args.image), tuple(args.modes.split(",")), threads=args.threads)
    print(f"preset {args.preset}, photo {args.image}, CPU {cpu_info().describe()}")
    for name, dev in result.items():
        print(f"  {name:28s} {dev.line()}")


if __name__ == "__main__":
    main()
