"""The two sides of ``image_latency.py``: the benchmark calls on one processor (:class:`Side`), and the official
model serving them from the oracle subprocess (:class:`RemoteSide` in the parent, this file run as a script in
the child: ``python -P bench/latency_sides.py --config ... --image ... --checkpoint ...``).

The child runs with ``-P`` and ``PYTHONPATH=.oracle`` so that ``import sam3`` is the official package, never
ours; protocol lines go to a private copy of its stdout, one JSON line per call.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ORACLE = ROOT / ".oracle"
ORACLE_SCRIPTS = ROOT / "tests" / "parity" / "oracle"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def variant(rgb: np.ndarray, k: int) -> Image.Image:
    """The photo with pixel (0, 0, 0) xor-ed with ``k``: k = 0 is the photo, any other k a new image."""
    arr = rgb.copy()
    arr[0, 0, 0] ^= np.uint8(k % 256)
    return Image.fromarray(arr)


def click_kwargs(h: int, w: int, i: int = 0) -> dict:
    """One positive click near the middle of the lower half (on the truck in truck.jpg), nudged per call."""
    xy = [[0.45 * w + 3 * i, 0.6 * h + 2 * i]]
    return {
        "point_coords": np.array(xy, dtype=np.float32),
        "point_labels": np.array([1], dtype=np.int32),
        "multimask_output": True,
    }


# ------------------------------------------------------------------------------------------- one side
class Side:
    """The benchmark calls on one processor; every method returns (seconds, extra)."""

    def __init__(self, processor, predict_inst, image_path: str, context=None):
        import contextlib

        self.processor, self.predict_inst = processor, predict_inst
        self.context = context or contextlib.nullcontext  # the precision context, entered around each call
        self.rgb = np.asarray(Image.open(image_path).convert("RGB"))
        self.h, self.w = self.rgb.shape[:2]
        self.state = None  # the photo (variant 0), encoded in step 1

    def _timed(self, fn):
        """-> ([wall seconds, CPU seconds of this process], fn's result)."""
        with self.context():
            t0, c0 = time.perf_counter(), time.process_time()
            extra = fn()
            return [time.perf_counter() - t0, time.process_time() - c0], extra

    def set_image(self, k: int):
        image = variant(self.rgb, k)  # made before the clock starts: the user already has the image
        dt, state = self._timed(lambda: self.processor.set_image(image))
        if k == 0:
            self.state = state
        return dt, None

    def text(self, prompt: str, threshold: float | None = None):
        if threshold is not None:  # outside the clock: a plain attribute on both processors
            self.processor.confidence_threshold = float(threshold)
        return self._timed(lambda: len(self.processor.set_text_prompt(prompt, self.state)["scores"]))

    def click(self, i: int):
        kw = click_kwargs(self.h, self.w, i)
        return self._timed(lambda: [float(v) for v in self.predict_inst(self.state, **kw)[1]])

    def click_new(self, k: int):
        image, kw = variant(self.rgb, k), click_kwargs(self.h, self.w)
        return self._timed(lambda: self.predict_inst(self.processor.set_image(image), **kw) and None)

    def text_new(self, k: int, prompt: str):
        """A text prompt on a new image (encoding included), at the threshold of the last ``text`` call."""
        image = variant(self.rgb, k)
        return self._timed(
            lambda: len(self.processor.set_text_prompt(prompt, self.processor.set_image(image))["scores"])
        )

    def info(self):
        import torch

        return [0.0, 0.0], {"threads": torch.get_num_threads(), "torch": torch.__version__, "hw": [self.h, self.w]}


class RemoteSide:
    """The same calls, answered by the oracle subprocess (JSON lines over its stdin / a stdout pipe)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def call(self, op: str, *args):
        self.proc.stdin.write(json.dumps([op, *args]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the oracle worker died during {op}{args} (exit code {self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"oracle worker: {op}{args} failed:\n{reply['error']}")
        return reply["seconds"], reply["extra"]

    def __getattr__(self, op):
        return lambda *args: self.call(op, *args)


# ------------------------------------------------------------------------------------------- official side
def oracle_worker(args) -> None:
    """Inside the oracle subprocess: build/load the official model, then serve ``Side`` calls."""
    # Protocol lines go to a private copy of stdout; anything the official code prints lands on stderr.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.path.insert(0, str(ORACLE_SCRIPTS))
    import build_official  # imports the shims first: no GPU, CPU code paths
    import run_official
    import shims
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    shims.install()
    from sam3.model.sam3_image_processor import Sam3Processor

    cfg = json.loads(Path(args.config).read_text())
    ckpt = Path(args.checkpoint)
    t0 = time.perf_counter()
    if ckpt.is_file():
        log(f"official: building and loading {ckpt}")
        model = build_official.build_official_image_model(cfg)
        run_official.load_checkpoint(model, str(ckpt))
    else:
        log(f"official: drawing random weights (seed {args.seed}) -> {ckpt}")
        model = build_official.build_random(cfg, args.seed)
        tmp = ckpt.with_suffix(".partial")
        torch.save(build_official.to_checkpoint_names(model.state_dict()), tmp)
        tmp.replace(ckpt)
    model.eval()
    build_s = time.perf_counter() - t0
    processor = Sam3Processor(model, resolution=cfg["vision"]["image_size"], device="cpu", confidence_threshold=0.5)
    mixed = None
    if args.official_precision == "bf16":  # the official release's own reduced precision, on the CPU
        mixed = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    side = Side(processor, model.predict_inst, args.image, mixed)

    def pick_thresholds(prompts: list[str], keep: int):
        """Per prompt, the midpoint between its keep-th and (keep+1)-th best score on the photo.

        Random weights give every prompt its own score level: one threshold for all would keep 0 queries
        for some and all of them (each upsampled to full resolution) for others.
        """
        grounding, seen, out = model.forward_grounding, {}, {}

        def recorded(*a, **kw):
            res = grounding(*a, **kw)
            seen["s"] = (res["pred_logits"].sigmoid() * res["presence_logit_dec"].sigmoid().unsqueeze(1)).flatten()
            return res

        model.forward_grounding = recorded
        processor.confidence_threshold = 1.0  # keep nothing: no full-size masks in this untimed pass
        try:
            for prompt in prompts:
                processor.set_text_prompt(prompt, side.state)
                s = torch.sort(seen["s"].double(), descending=True).values
                out[prompt] = [float((s[keep - 1] + s[keep]) / 2), float(s[keep - 1] - s[keep])]
        finally:
            model.forward_grounding = grounding
        return [0.0, 0.0], out

    side.pick_thresholds = pick_thresholds
    proto.write(json.dumps({"ready": True, "build_s": build_s}) + "\n")
    proto.flush()
    for line in sys.stdin:
        op, *rest = json.loads(line)
        try:
            seconds, extra = getattr(side, op)(*rest)
            reply = {"seconds": seconds, "extra": extra}
        except Exception:  # noqa: BLE001  (reported to the parent, which raises with the traceback)
            import traceback

            reply = {"error": traceback.format_exc()}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


def start_oracle(args, cfg: dict, image: Path, ckpt: Path, workdir: Path) -> tuple[RemoteSide, float]:
    (workdir / "cfg.json").write_text(json.dumps(cfg))
    env = dict(os.environ, PYTHONPATH=str(ORACLE), CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore")
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [
        sys.executable,
        "-P",
        str(Path(__file__).resolve()),
        "--config",
        str(workdir / "cfg.json"),
        "--image",
        str(image),
        "--checkpoint",
        str(ckpt),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--official-precision",
        args.official_precision,
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # stderr (progress) goes straight through
    if not line:
        raise RuntimeError(f"the oracle worker failed to start (exit code {proc.wait()})")
    return RemoteSide(proc), json.loads(line)["build_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description="the official side of image_latency.py (started by it)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--official-precision", default="fp32", choices=["fp32", "bf16"])
    oracle_worker(ap.parse_args())


if __name__ == "__main__":
    main()
