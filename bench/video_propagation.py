"""Video propagation time per frame: our ``VideoPredictor`` against the official ``sam3==0.1.4`` ``Sam3VideoPredictor``.

Usage (from the repository root; the oracle must be installed in ``.oracle``, see ``run_tests.sh``)::

    .venv/bin/python bench/video_propagation.py                          # tiny preset, 8 frames
    .venv/bin/python bench/video_propagation.py --preset sam3 --frames 3 # released sizes (slow: minutes)
    .venv/bin/python bench/video_propagation.py --model-version sam3.1   # SAM 3.1 against the upstream 3.1 code

``--model-version sam3.1``: the other side is the upstream SAM 3.1 video predictor
(``tests/parity/oracle/video_upstream31.py``, run with ``PYTHONPATH=.oracle31:.oracle``: assemble it first with
``tests/parity/oracle/assemble_sam31.py``), with SAM 3.1's settings (``TrackingHeuristics.sam31()``) on both sides
and the development mode's object-score shift (random decoders otherwise call every tracked object absent).
The upstream predictor detects propagated frames 16 at a time (its batched grounding), so its per-frame times
come in bursts: compare the totals.

How it runs:

1. An oracle subprocess (``PYTHONPATH=.oracle python -P bench/video_propagation.py --oracle-worker ...``)
   builds the official video model (``tests/parity/oracle/video_official.py``: a ``Sam3VideoInference``
   with instance interactivity and the CPU shims) at the preset's sizes with deterministic random weights,
   saves them as a ``sam3.pt`` in ``--workdir`` (reused by later runs with the same preset and seed) and
   waits for commands on stdin.
2. This process loads that ``sam3.pt`` into our model. Both sides open the first ``--frames`` frames of
   ``--video`` (a JPEG folder), add the text prompt on frame 0 and propagate forward, alternating frame by
   frame (official frame t, ours frame t, official frame t+1, ...). Each side times its own calls, so only
   one computes at a time and a burst of load from elsewhere hits both sides.

Random weights score every query about the same (and differently at each preset), so the thresholds are
picked from the weights: before anything is timed, our detector scores frame 0 once, and the detection
threshold is set between the ``--objects``-th and the next score kept by the mask NMS (new tracks later need
at least frame 0's best score). Both sides get the same thresholds; the hot-start delay is 0 (a frame is
returned as soon as it is processed). The object counts per frame are printed as a check that both sides did
the same work. With ``--precision`` other than fp32, the thresholds are picked from our fp32 scores (the
official's, to round-off) for the official side, then again from our reduced-precision scores for ours: its
scores move by more than the gaps between them, so each side keeps its own ``--objects`` on frame 0.

Reading the numbers: the official detector works one frame ahead (its multi-GPU prefetch computes frame t+1
while on frame t, and the text prompt computes frames 0 and 1), so its per-frame times alternate between
"two detector passes" and "none", and its median can mislead. The totals (prompt + propagation) compare
the same work; medians are printed too.
"""

from __future__ import annotations

import contextlib
import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORACLE = ROOT / ".oracle"
ORACLE_SCRIPTS = ROOT / "tests" / "parity" / "oracle"
VIDEO = ROOT.parent / "shared" / "data" / "video_0001"
PREFIX = "@@ "  # protocol lines of the worker (its other output is logging)

SCORE_GAIN = -6.0  # see tests/parity/oracle/video_official.py
OBJECT_SHIFT = 4.0  # SAM 3.1 only: sam3.dev_weights.make_visible's shift of the tracker decoders' object scores
HEURISTICS = {"det_nms_thresh": 0.5, "hotstart_delay": 0}
TEXT = "a person"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ oracle side
def oracle_worker(args) -> None:
    """Runs in the oracle environment: JSON commands on stdin, one ``PREFIX`` JSON line per answer."""
    sys.path.insert(0, str(ORACLE_SCRIPTS))
    import video_official  # noqa: PLC0415  (installs the CPU shims before torch loads)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = json.loads(Path(args.config).read_text())
    heuristics = json.loads(args.heuristics)
    ckpt = Path(args.checkpoint)
    if args.model_version == "sam3.1":
        import video_upstream31 as side  # noqa: PLC0415

        side.OBJECT_SHIFT = OBJECT_SHIFT
        build, make_predictor = side.build_upstream31_video_model, side.make_predictor31
    else:
        build, make_predictor = video_official.build_official_video_model, video_official.make_predictor
    with torch.inference_mode():
        model, state = build(cfg, heuristics, args.seed, str(ckpt) if ckpt.is_file() else None, args.score_gain)
    if not ckpt.is_file():
        torch.save(state, ckpt)
    predictor = make_predictor(model)
    sid = predictor.handle_request({"type": "start_session", "resource_path": args.frames_dir})["session_id"]
    stream = None

    def answer(obj) -> None:
        print(PREFIX + json.dumps(obj), flush=True)

    answer({"ready": True})
    for line in sys.stdin:
        cmd = json.loads(line)
        t0 = time.perf_counter()
        with torch.inference_mode():
            if cmd["op"] == "configure":  # thresholds picked by the parent (our field names)
                for k, v in cmd["heuristics"].items():
                    setattr(model, video_official.HEURISTIC_ARGS[k], v)
                answer({"ok": True})
            elif cmd["op"] == "prompt":
                out = predictor.handle_request(
                    {"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": cmd["text"]}
                )["outputs"]
                answer({"seconds": time.perf_counter() - t0, "objects": len(out["out_obj_ids"])})
            elif cmd["op"] == "next":
                if stream is None:
                    stream = predictor.handle_stream_request(
                        {"type": "propagate_in_video", "session_id": sid, "propagation_direction": "forward"}
                    )
                resp = next(stream, None)
                if resp is None:
                    answer({"done": True})
                else:
                    answer(
                        {
                            "seconds": time.perf_counter() - t0,
                            "frame": resp["frame_index"],
                            "objects": len(resp["outputs"]["out_obj_ids"]),
                        }
                    )
            else:
                answer({"bye": True})
                return


class Oracle:
    def __init__(self, args, cfg_path: Path, frames_dir: Path, ckpt: Path, heuristics: dict):
        path = f"{ROOT / '.oracle31'}:{ORACLE}" if args.model_version == "sam3.1" else str(ORACLE)
        env = dict(os.environ, PYTHONPATH=path, CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore")
        cmd = [
            sys.executable,
            "-P",
            str(Path(__file__).resolve()),
            "--oracle-worker",
            "--config",
            str(cfg_path),
            "--frames-dir",
            str(frames_dir),
            "--checkpoint",
            str(ckpt),
            "--seed",
            str(args.seed),
            "--heuristics",
            json.dumps(heuristics),
            "--score-gain",
            str(SCORE_GAIN),
            "--threads",
            str(args.threads),
            "--model-version",
            args.model_version,
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.read()  # ready (the weights are built and saved by then)

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX) :])
        raise RuntimeError(f"the oracle worker exited ({self.proc.wait()})")

    def call(self, op: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        try:
            self.call("quit")
        except (RuntimeError, BrokenPipeError):
            pass
        self.proc.wait(timeout=60)


# ------------------------------------------------------------------------------------------------ our side
class Ours:
    def __init__(
        self, ckpt: Path, preset: str, frames_dir: Path, threads: int, precision: str = "fp32", version: str = "sam3"
    ):
        import torch

        from sam3.device import resolve_precision
        from sam3.registry import build_model

        if threads:
            torch.set_num_threads(threads)
        self.version = version
        self.model = build_model(version, checkpoint_path=ckpt, preset=preset, device="cpu", load_from_HF=False)
        self.precision = resolve_precision(precision, "cpu")  # SAM3_PRECISION; entered around prompt / next
        self.prepared = False  # plain fp32 (the official's scores to fp32 round-off) until apply_precision()
        self.frames_dir = frames_dir

    def apply_precision(self) -> None:
        """Quantise as ``--precision`` says (int8); autocast modes are entered around each call."""
        from sam3.inference.runtime import prepare_model

        prepare_model(self.model, self.precision)
        self.prepared = True

    def pick_thresholds(self, objects: int) -> dict:
        """Untimed: score frame 0 and place the detection threshold below the ``objects`` best kept ones."""
        import torch

        from sam3.inference.association import nms_masks
        from sam3.inference.video_io import load_video_frames
        from sam3.modeling.outputs import GeometricPrompt, TextFeatures

        cfg = self.model.config
        video = load_video_frames(self.frames_dir, cfg.image_size, cfg.image_mean, cfg.image_std, max_frames=1)
        with torch.inference_mode(), self.precision.context() if self.prepared else contextlib.nullcontext():
            feats = self.model.encode_image(video.frames[:1].float())
            text = self.model.encode_text([TEXT, "visual"])
            out = self.model.detector.forward_grounding(
                feats,
                TextFeatures(text.features[:1], text.mask[:1]),
                GeometricPrompt.empty(1, "cpu"),
                joint_scores=True,
            )
        probs, masks = out.pred_logits[0].sigmoid(), out.pred_masks[0]
        iom = self.version == "sam3.1"  # SAM 3.1's NMS compares masks by IoM
        keep = nms_masks(probs, masks, 0.0, HEURISTICS["det_nms_thresh"], use_iom=iom)
        kept = probs[keep].sort(descending=True).values.tolist()
        k = min(objects, len(kept))
        thr = (kept[k - 1] + kept[k]) / 2 if k < len(kept) else kept[-1] - 1e-4
        # a margin under the best score: the two sides compute it to round-off (1e-7), and a tie would split them
        return {"score_threshold_detection": thr, "new_det_thresh": max(thr, kept[0] - 1e-4)}

    def start(self, heuristics: dict) -> None:
        from sam3.inference.association import TrackingHeuristics
        from sam3.inference.video_predictor import VideoPredictor

        base = TrackingHeuristics.sam31() if self.version == "sam3.1" else TrackingHeuristics()
        self.predictor = VideoPredictor(self.model, dataclasses.replace(base, **heuristics))
        self.sid = self.predictor.start_session(str(self.frames_dir))  # the typed session
        self.stream = None

    def prompt(self, text: str) -> dict:
        t0 = time.perf_counter()
        with self.precision.context():
            r = self.predictor.add_prompt(self.sid, 0, text=text)
        return {"seconds": time.perf_counter() - t0, "objects": r.num_objects}

    def next(self) -> dict:
        t0 = time.perf_counter()
        with self.precision.context():  # the propagation is planned under the session's precision too
            if self.stream is None:
                self.stream = self.predictor.propagate(self.sid, "forward")
            r = next(self.stream, None)
        if r is None:
            return {"done": True}
        return {"seconds": time.perf_counter() - t0, "frame": r.frame_idx, "objects": r.num_objects}


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "sam3"])
    ap.add_argument("--frames", type=int, default=8, help="frames to open and propagate over")
    ap.add_argument("--video", default=str(VIDEO), help="a folder of JPEG frames")
    ap.add_argument("--workdir", default="/tmp/sam3_video_bench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads on both sides (0: torch default)")
    ap.add_argument("--objects", type=int, default=3, help="objects the thresholds let through on frame 0")
    ap.add_argument("--model-version", default="sam3", choices=["sam3", "sam3.1"], help="SAM 3 or SAM 3.1")
    # oracle worker (internal)
    ap.add_argument(
        "--precision",
        default="fp32",
        choices=["auto", "fp32", "bf16", "fp16", "int8"],
        help="our side's SAM3_PRECISION (default fp32)",
    )
    ap.add_argument("--oracle-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--frames-dir", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    ap.add_argument("--heuristics", help=argparse.SUPPRESS)
    ap.add_argument("--score-gain", type=float, default=SCORE_GAIN, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.oracle_worker:
        oracle_worker(args)
        return

    if not (ORACLE / "sam3" / "model_builder.py").is_file():
        sys.exit("the official package is not installed in .oracle (run ./run_tests.sh once)")
    if args.model_version == "sam3.1" and not (ROOT / ".oracle31" / "sam3" / "model_builder.py").is_file():
        sys.exit("the upstream SAM 3.1 code is not assembled in .oracle31 (tests/parity/oracle/assemble_sam31.py)")
    sys.path.insert(0, str(ROOT))
    from sam3.config import get_config
    from sam3.config_multiplex import get_multiplex_config
    from sam3.inference.association import TrackingHeuristics

    version31 = args.model_version == "sam3.1"
    work = Path(args.workdir) / f"{args.model_version}_{args.preset}_seed{args.seed}"
    frames_dir = work / f"frames{args.frames}"
    frames = sorted(p for p in Path(args.video).iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[: args.frames]
    if len(frames) < args.frames:
        sys.exit(f"{args.video} has fewer than {args.frames} JPEG frames")
    frames_dir.mkdir(parents=True, exist_ok=True)
    for f in frames:
        shutil.copy(f, frames_dir / f.name)
    cfg_path = work / "cfg.json"
    cfg = get_multiplex_config(args.preset) if version31 else get_config(args.preset)
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    base = TrackingHeuristics.sam31() if version31 else TrackingHeuristics()
    heuristics = dataclasses.asdict(dataclasses.replace(base, **HEURISTICS))
    ckpt = work / ("sam3.1_multiplex.pt" if version31 else "sam3.pt")

    t0 = time.perf_counter()
    log(f"building the official model ({args.preset}){' and its random weights' if not ckpt.is_file() else ''} ...")
    oracle = Oracle(args, cfg_path, frames_dir, ckpt, heuristics)
    log(f"  {time.perf_counter() - t0:.0f} s; building ours ...")
    ours = Ours(ckpt, args.preset, frames_dir, args.threads, args.precision, args.model_version)
    try:
        picked = ours.pick_thresholds(args.objects)
        log(f"thresholds from frame 0's scores: {picked}")
        oracle.call("configure", heuristics=picked)
        ours.apply_precision()
        if ours.precision.mode != "fp32":
            # Reduced precision moves the scores by more than the gaps between them (random weights), so the
            # official's thresholds could leave our side with no object, or many: ours keeps its own --objects.
            picked = ours.pick_thresholds(args.objects)
            log(f"our thresholds in {ours.precision.mode}: {picked}")
        heuristics.update(picked)
        ours.start(heuristics)
        p_off, p_ours = oracle.call("prompt", text=TEXT), ours.prompt(TEXT)
        log(
            f"text prompt on frame 0: official {p_off['seconds']:.2f} s ({p_off['objects']} objects), "
            f"ours {p_ours['seconds']:.2f} s ({p_ours['objects']} objects)"
        )
        rows = []
        while True:
            a, b = oracle.call("next"), ours.next()
            if a.get("done") or b.get("done"):
                if not (a.get("done") and b.get("done")):
                    log("WARNING: the two sides returned a different number of frames")
                break
            rows.append((a, b))
            log(
                f"frame {a['frame']}: official {a['seconds']:.2f} s ({a['objects']} objects), "
                f"ours {b['seconds']:.2f} s ({b['objects']} objects)"
            )
    finally:
        oracle.close()
    if not rows:
        sys.exit("no frame was propagated")
    same = all(a["frame"] == b["frame"] and a["objects"] == b["objects"] for a, b in rows)
    n = len(rows)
    tot_off, tot_ours = sum(a["seconds"] for a, _ in rows), sum(b["seconds"] for _, b in rows)
    table = [
        ("text prompt (frame 0), s", p_off["seconds"], p_ours["seconds"]),
        (
            "propagation, median s/frame",
            statistics.median(a["seconds"] for a, _ in rows),
            statistics.median(b["seconds"] for _, b in rows),
        ),
        ("propagation, mean s/frame", tot_off / n, tot_ours / n),
        ("prompt + propagation, s", p_off["seconds"] + tot_off, p_ours["seconds"] + tot_ours),
    ]
    print(f"our precision {ours.precision.mode} ({ours.precision.reason})")
    print(
        f"{args.model_version}, preset {args.preset}, {n} frames propagated forward from frame 0, CPU, "
        f"{args.threads or 'default'} threads, objects per frame {[b['objects'] for _, b in rows]}"
    )
    print(f"same frames and object counts on both sides: {'yes' if same else 'NO'}")
    print(f"{'':<30}{'official':>10}{'ours':>10}{'ours/official':>15}")
    for name, a, b in table:
        print(f"{name:<30}{a:>10.3f}{b:>10.3f}{b / a if a > 0 else float('nan'):>15.2f}")


if __name__ == "__main__":
    main()
