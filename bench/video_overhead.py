"""Per-frame overhead of video propagation on the CPU: operators dispatched, host reads, time.

    .venv/bin/python bench/video_overhead.py                      # tiny preset, 1 / 5 / 16 objects
    .venv/bin/python bench/video_overhead.py --objects 1,5 --json out.json
    .venv/bin/python bench/video_overhead.py --model-version sam3.1 --objects 1,5,16,32   # SAM 3.1's scaling

On a GPU every dispatched operator is at least one kernel launch, and every read of a tensor's value by the
host is a device-to-host synchronisation that stalls the launch queue. Both can be counted on any CPU:

* operators: every ATen call seen by a ``TorchDispatchMode`` during a propagated frame;
* host reads: ``item``, ``tolist``, ``numpy``, ``cpu``, ``__array__``, ``float``/``int``/``bool``/``index`` of a
  tensor (Python-level calls, counted even on CPU tensors: the code would sync on a GPU), and operators whose
  output shape depends on the data (``nonzero``, ``masked_select``, ``unique``, boolean-mask indexing, ...).
  What ``cpu()`` returned, and what is computed from it, is host data: reading it again or computing on it
  counts neither as a read nor as an operator.

The video: the first frames of ``tests/data/video_0001`` (a real clip, 1280x720 JPEG), or ``--video`` (a JPEG
folder or a video file). ``N`` objects are clicked on frame 0 (one positive click each, spread over a grid),
then propagated forward; frame 0 and the first ``--warmup`` propagated frames are not counted. Per object
count the bench prints operators, host reads, wall and CPU milliseconds per frame (medians; the process's CPU
time, all threads, is the steadier figure on a machine shared with other work), and the ratios to the
1-object row. Precision fp32 by default (``--precision auto`` resolves to bf16 on a CPU with native bf16). Under
bf16 / fp16 the bench also counts weight casts per frame: dtype casts of a model parameter, which autocast makes
on every call unless the weights are held in its dtype (``prepare_model``'s default; ``--no-hold`` for the
autocast-only path).

``--model-version sam3.1``: SAM 3.1, whose multiplexed tracker decodes the objects of a tracker state in buckets
of ``multiplex_count`` (16; 4 at the tiny preset) per pass. Objects detected together share a state; a clicked
object starts a state of its own (as released). ``--prompt text`` starts the objects together: one text prompt on
frame 0, every query passing and the object cap keeping exactly N (the detector runs on every frame, as in any
detect-then-track propagation); the default ``clicks`` clicks them one by one.
``--accelerator-paths``: the paths a CUDA device takes where they differ from the CPU's (today the video
clean-up: decided with tensor ops on the device instead of labelled on the host), counted on this CPU.
Its random weights get the development mode's score spreading (``sam3.dev_weights``), so tracked objects stay
present (the plain random propagation decoder scores every object absent).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT / "tests" / "data" / "video_0001"

# Operators whose output shape depends on tensor values: the host must read them to size the output.
DATA_DEPENDENT = {
    "aten.nonzero.default",
    "aten.nonzero_static.default",
    "aten.masked_select.default",
    "aten._unique2.default",
    "aten.unique_dim.default",
    "aten.unique_consecutive.default",
    "aten.repeat_interleave.Tensor",
    "aten.argwhere.default",
}
# Python-level reads of tensor values (each a device-to-host copy + sync on a GPU).
# dtype casts (what autocast calls on a weight it casts)
CASTS = (torch.ops.aten.to, torch.ops.aten._to_copy)
HOST_READS = ("item", "tolist", "numpy", "cpu", "__array__", "__bool__", "__float__", "__int__", "__index__")


class OverheadCounter(TorchDispatchMode):
    """Counts dispatched operators and host reads while active (``with OverheadCounter() as c:``)."""

    def __init__(self, parameters: tuple[torch.Tensor, ...] = ()):
        super().__init__()
        self.parameters = {p.data_ptr() for p in parameters}
        self.weight_casts = 0  # dtype casts of a model parameter (autocast's per-call weight casts)
        self.ops = 0
        self.reads = 0
        self.read_kinds: Counter[str] = Counter()
        self.read_sites: Counter[str] = Counter()  # "file:line kind" of the caller in sam3/ (``--where``)
        self.op_kinds: Counter[str] = Counter()
        self._depth = 0  # a host read made inside another (``float(t)`` calls ``item``) counts once
        self._saved: dict[str, object] = {}
        self._quiet = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self._quiet:
            return out
        inputs = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        if any(_is_host_copy(a) for a in inputs):
            # work on values already copied back to the host: host code, not a kernel or another transfer
            for o in tree_flatten(out)[0]:
                if isinstance(o, torch.Tensor):
                    o._sam3_host_copy = True
            return out
        if name != "aten._local_scalar_dense.default":  # the op behind item(): counted at the Python level
            self.ops += 1
            self.op_kinds[name] += 1
        if func.overloadpacket in CASTS and args and args[0].data_ptr() in self.parameters:
            if isinstance(out, torch.Tensor) and out.dtype != args[0].dtype:  # ``to`` its own dtype is no cast
                self.weight_casts += 1
        if name in DATA_DEPENDENT or (name == "aten.index.Tensor" and _has_bool_index(args)):
            self._read(name)
        return out

    def _read(self, kind: str) -> None:
        self.reads += 1
        self.read_kinds[kind] += 1
        frame = sys._getframe(1)
        while frame is not None and "/sam3/" not in frame.f_code.co_filename:
            frame = frame.f_back
        if frame is not None:
            where = frame.f_code.co_filename.split("/sam3/")[-1]
            self.read_sites[f"sam3/{where}:{frame.f_lineno} {kind}"] += 1

    def __enter__(self):
        for attr in HOST_READS:
            original = getattr(torch.Tensor, attr)
            self._saved[attr] = original
            setattr(torch.Tensor, attr, self._wrap(attr, original))
        return super().__enter__()

    def __exit__(self, *exc):
        for attr, original in self._saved.items():
            setattr(torch.Tensor, attr, original)
        self._saved.clear()
        return super().__exit__(*exc)

    def _wrap(self, attr: str, original):
        counter = self

        def wrapped(tensor, *args, **kwargs):
            if counter._depth == 0 and not _is_host_copy(tensor):
                counter._read(attr)
            counter._depth += 1
            try:
                out = original(tensor, *args, **kwargs)
            finally:
                counter._depth -= 1
            if attr == "cpu" and isinstance(out, torch.Tensor):
                if out is tensor:  # already on the CPU: mark a new alias, not the device-side tensor itself
                    counter._quiet = True
                    try:
                        out = torch.ops.aten.alias(tensor)
                    finally:
                        counter._quiet = False
                out._sam3_host_copy = True  # reading it again (numpy, tolist) costs no second transfer
            return out

        return wrapped

    def snapshot(self) -> tuple[int, int, int]:
        return self.ops, self.reads, self.weight_casts


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices)


def _is_host_copy(tensor: torch.Tensor) -> bool:
    """``t.cpu().numpy()``: reading a tensor that already came back is not a second transfer."""
    return getattr(tensor, "_sam3_host_copy", False)


def click_grid(n: int, hw: tuple[int, int]) -> list[list[float]]:
    """``n`` click positions (x, y) spread over a grid inside the frame (pixels)."""
    h, w = hw
    cols = max(1, int(n**0.5 + 0.999))
    rows = (n + cols - 1) // cols
    return [[w * (0.5 + (k % cols)) / cols, h * (0.5 + (k // cols)) / rows] for k in range(n)]


def detect_exactly(predictor, objects: int) -> None:
    """Let a text prompt start exactly ``objects`` objects together: every query passes (no NMS, no thresholds) and
    the object cap keeps the ``objects`` best ones (random weights; the detector still runs on every frame)."""
    import dataclasses

    predictor.engine.cfg = dataclasses.replace(
        predictor.engine.cfg, score_threshold_detection=0.0, det_nms_thresh=0.0, new_det_thresh=0.0,
        max_num_objects=objects, hotstart_delay=0, suppress_det_close_to_boundary=False,
    )  # fmt: skip
    predictor.cfg = predictor.engine.cfg


def measure(predictor, video: str, objects: int, warmup: int, frames: int | None, prompt: str = "clicks") -> dict:
    """Ops, host reads and seconds per propagated frame with ``objects`` objects: clicked one by one, or detected
    together by a text prompt (``prompt="text"``)."""
    session = predictor.start_session(video)
    try:
        if prompt == "text":
            detect_exactly(predictor, objects)
            predictor.add_prompt(session, 0, text="a person")
        for k, (x, y) in enumerate(click_grid(objects, session.video_hw) if prompt == "clicks" else []):
            predictor.add_prompt(session, 0, points=[[x, y]], labels=[1], obj_id=k + 1)
        prop = predictor.propagate(session, "forward", start_frame=0, max_frames=frames)
        ops, reads, casts, secs, cpu = [], [], [], [], []
        counter = OverheadCounter(tuple(predictor.model.parameters()))
        tracked = []
        while not prop.finished:
            with counter:
                before = counter.snapshot()
                t0, c0 = time.perf_counter(), time.process_time()
                results = prop.step()
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                after = counter.snapshot()
            ops.append(after[0] - before[0])
            reads.append(after[1] - before[1])
            casts.append(after[2] - before[2])
            secs.append(dt)
            cpu.append(dc)
            tracked += [len(r.obj_ids) for r in results]
    finally:
        predictor.close_session(session)
    skip = 1 + warmup  # the prompted frame, then the warm-up frames
    if len(ops) <= skip:
        raise ValueError(f"the video has {len(ops)} frames: too few to measure after {skip} skipped")
    ops, reads, casts, secs, cpu = ops[skip:], reads[skip:], casts[skip:], secs[skip:], cpu[skip:]
    return {
        "objects": objects,
        "frames": len(ops),
        "ops_per_frame": statistics.mean(ops),
        "host_reads_per_frame": statistics.mean(reads),
        "weight_casts_per_frame": statistics.mean(casts),
        "ms_per_frame": 1e3 * statistics.median(secs),
        "cpu_ms_per_frame": 1e3 * statistics.median(cpu),
        "objects_tracked_min": min(tracked) if tracked else 0,
        "read_kinds": dict(counter.read_kinds.most_common()),
        "read_sites": dict(counter.read_sites.most_common()),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "sam3"])
    ap.add_argument("--model-version", default="sam3", choices=["sam3", "sam3.1"], help="which model to build")
    ap.add_argument(
        "--prompt", default="clicks", choices=["clicks", "text"],
        help="clicks: one click per object; text: the objects detected together by one text prompt",
    )  # fmt: skip
    ap.add_argument("--objects", default="1,5,16", help="object counts, comma-separated")
    ap.add_argument("--video", default=str(VIDEO), help="a JPEG folder or a video file")
    ap.add_argument("--frames", type=int, default=None, help="frames to propagate (default: the whole video)")
    ap.add_argument("--warmup", type=int, default=1, help="propagated frames not counted (after frame 0)")
    ap.add_argument("--precision", default="fp32", help="auto | fp32 | bf16 (sam3.device policy)")
    ap.add_argument("--no-hold", action="store_true", help="bf16/fp16: let autocast cast the weights every call")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--where", action="store_true", help="print where in sam3/ the host reads happen")
    ap.add_argument(
        "--accelerator-paths", action="store_true",
        help="count what an accelerator runs: the video clean-up decided on the device (sam3.ops.masks.HOST_LABELLED"
        " emptied), not labelled on the host as on a CPU",
    )  # fmt: skip
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument(
        "--system-malloc", action="store_true",
        help="leave glibc's malloc thresholds as they are (default: the service's server.heap.keep_freed_buffers)",
    )  # fmt: skip
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from sam3.device import cpu_info, resolve_precision
    from sam3.registry import build_model
    from sam3.inference.runtime import prepare_model, set_num_threads
    from sam3.inference.video_predictor import VideoPredictor

    set_num_threads(args.threads)
    if args.accelerator_paths:
        import sam3.ops.masks

        sam3.ops.masks.HOST_LABELLED = frozenset()
    kept = False
    if not args.system_malloc:
        from server.heap import keep_freed_buffers

        kept = keep_freed_buffers()
    torch.manual_seed(0)
    model = build_model(args.model_version, preset=args.preset, device="cpu", random_weights=True)
    if args.model_version == "sam3.1":  # its random propagation decoder calls every object absent: spread it
        from sam3.dev_weights import make_visible

        make_visible(model)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    report = prepare_model(model, precision, hold_weights=not args.no_hold)
    predictor = VideoPredictor(model)
    print(
        f"video overhead: {args.model_version}, objects by {args.prompt}, preset {args.preset}, precision {precision.mode}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CPU {cpu_info().describe()}; video {args.video}; "
        f"{len(report.held)} modules hold their weights in the autocast dtype; freed buffers kept (malloc): {kept}"
        + ("; accelerator paths (clean-up on the device)" if args.accelerator_paths else ""),
        flush=True,
    )
    with precision.context():  # one untimed run: first-call allocations and lazy inits
        measure(predictor, args.video, 1, 0, 2, args.prompt)
    rows = []
    for n in [int(x) for x in args.objects.split(",")]:
        with precision.context():
            row = measure(predictor, args.video, n, args.warmup, args.frames, args.prompt)
        rows.append(row)
        if args.where:
            print("\n".join(f"    {k}: {v}" for k, v in row["read_sites"].items()))
        base = rows[0]
        print(
            f"{n:>3} objects: {row['ops_per_frame']:8.0f} ops/frame ({row['ops_per_frame'] / base['ops_per_frame']:.2f}x)"
            f"  {row['host_reads_per_frame']:6.1f} host reads/frame  {row['weight_casts_per_frame']:6.1f} weight casts/frame"
            f"  {row['ms_per_frame']:8.1f} ms/frame"
            f" ({row['ms_per_frame'] / base['ms_per_frame']:.2f}x)  {row['cpu_ms_per_frame']:8.1f} CPU ms/frame"
            f" ({row['cpu_ms_per_frame'] / base['cpu_ms_per_frame']:.2f}x)  over {row['frames']} frames,"
            f" >= {row['objects_tracked_min']} objects returned;  reads: {row['read_kinds']}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
