"""The quality yardstick for reduced precision: how far the OFFICIAL model moves under bf16 autocast.

Issue 9: reduced precision must not change our results more than the official release's own reduced
precision changes its results. The yardstick is the official model on identical random weights under
bf16 autocast against the official model in fp32, on the same photo and prompts; each of our modes is
measured the same way against our fp32 (:func:`deviation` on both pairs).

Measures (one :class:`Deviation` per pair; kept sets use the fp32 run's per-prompt thresholds):

* ``kept_agreement``: mean over text/box prompts of the Jaccard index of the kept query sets (1 = same);
* ``max_score_diff``: the largest |score difference| over every query of every prompt;
* ``kept_mask_iou``: the smallest mask IoU among objects kept by both;
* ``click_mask_iou``: the smallest mask IoU among click / box results (every candidate mask).

Used by ``tests/parity/test_precision_quality.py`` (tiny preset, quick suite) and
``bench/precision_quality.py`` (full size).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tests.parity.harness import load_ours, run_oracle, write_config
from tests.parity.plan import default_plan

GROUNDING_CASES = ("text", "text_box", "visual")
INST_CASES = ("point", "pos_neg", "box", "box_points")


@dataclass(frozen=True)
class Deviation:
    kept_agreement: float
    max_score_diff: float
    kept_mask_iou: float
    click_mask_iou: float

    def no_worse_than(self, yardstick: "Deviation", iou_slack: float = 0.01, score_slack: float = 2.0**-9) -> list[str]:
        """The measures in which this deviation is worse than ``yardstick`` (empty: no worse).

        Two bf16 runs differ from fp32 by rounding that lands differently in each, so "no worse" allows
        one bf16 step of a score in [0.25, 0.5) (2^-9) and 0.01 of IoU / agreement; the raw figures are
        printed and written down in bench/README.md.
        """
        bad = []
        for name in ("kept_agreement", "kept_mask_iou", "click_mask_iou"):  # higher is better
            if getattr(self, name) < getattr(yardstick, name) - iou_slack:
                bad.append(f"{name} {getattr(self, name):.4f} < {getattr(yardstick, name):.4f}")
        if self.max_score_diff > yardstick.max_score_diff + score_slack:
            bad.append(f"max_score_diff {self.max_score_diff:.4g} > {yardstick.max_score_diff:.4g}")
        return bad

    def line(self) -> str:
        return " ".join(f"{k}={v:.4g}" for k, v in asdict(self).items())


@dataclass
class Outputs:
    """One run's results: per grounding case scores (Q,), kept indices, kept masks (N, H, W) bool;
    per click case masks (K, H, W) bool."""

    scores: dict[str, np.ndarray]
    kept: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    clicks: dict[str, np.ndarray]
    thresholds: dict[str, float]


def quality_plan(image: Path) -> dict:
    from PIL import Image

    with Image.open(image) as im:
        hw = (im.height, im.width)
    plan = default_plan(image, hw, full=True)
    plan["grounding"] = [c for c in plan["grounding"] if c["name"] in GROUNDING_CASES]
    plan["inst"] = [c for c in plan["inst"] if c["name"] in INST_CASES]
    return plan


def run_official_outputs(
    preset: str,
    workdir: Path,
    image: Path,
    *,
    autocast: str | None = None,
    thresholds: dict[str, float] | None = None,
    seed: int = 0,
    threads: int = 1,
) -> Outputs:
    """The official model on ``image``: random weights from ``seed`` saved as ``workdir/sam3.pt`` on the
    first run, loaded from there afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    plan = quality_plan(image)
    if thresholds is not None:
        plan["threshold"] = thresholds
    cfg_path, plan_path, ckpt = workdir / "cfg.json", workdir / f"plan-{autocast}.json", workdir / "sam3.pt"
    out = workdir / f"official-{autocast or 'fp32'}.pt"
    write_config(preset, cfg_path)
    plan_path.write_text(json.dumps(plan))
    weights = ["--checkpoint", str(ckpt)] if ckpt.is_file() else ["--seed", str(seed), "--save-checkpoint", str(ckpt)]
    extra = ["--autocast", autocast] if autocast else []
    run_oracle(
        "run_official.py",
        "--config",
        str(cfg_path),
        "--plan",
        str(plan_path),
        "--out",
        str(out),
        "--threads",
        str(threads),
        *weights,
        *extra,
        threads=threads,
    )
    off = torch.load(out, map_location="cpu", weights_only=True)
    o = Outputs({}, {}, {}, {}, {})
    for name, r in off["grounding"].items():
        o.scores[name] = r["scores"].float().flatten().numpy()
        o.kept[name] = np.flatnonzero(r["keep"].numpy())
        o.masks[name] = r["out_masks"].reshape(-1, *r["out_masks"].shape[-2:]).numpy().astype(bool)
        o.thresholds[name] = float(r["threshold"])
    for name, r in off["inst"].items():
        m = r["masks"].float().numpy()
        o.clicks[name] = m.reshape(-1, *m.shape[-2:]) > 0.5
    return o


@torch.inference_mode()
def run_our_outputs(model, image: Path, thresholds: dict[str, float], precision=None) -> Outputs:
    """Our processor on the same plan, under ``precision.context()`` (None: fp32)."""
    import contextlib

    from PIL import Image

    from sam3.inference.processor import Sam3Processor

    plan = quality_plan(image)
    processor = Sam3Processor(model, feature_cache_bytes=0)
    o = Outputs({}, {}, {}, {}, dict(thresholds))
    with precision.context() if precision is not None else contextlib.nullcontext():
        state = processor.set_image(Image.open(image).convert("RGB"))
        for case in plan["grounding"]:
            processor.reset_all_prompts(state)
            processor.set_confidence_threshold(thresholds[case["name"]], state)
            for step in case["steps"]:
                if step[0] == "text":
                    state = processor.set_text_prompt(step[1], state) or state
                elif step[0] == "box":
                    state = processor.add_geometric_prompt(list(step[1]), bool(step[2]), state) or state
            scores = state.detections.scores.flatten()
            o.scores[case["name"]] = scores.float().cpu().numpy()
            # compared in the scores' own dtype, as the processor does (bf16 scores meet a bf16 threshold)
            o.kept[case["name"]] = np.flatnonzero((scores > thresholds[case["name"]]).cpu().numpy())
            masks = state.masks
            o.masks[case["name"]] = masks.reshape(-1, *masks.shape[-2:]).cpu().numpy().astype(bool)
        for case in plan["inst"]:
            masks, _, _ = processor.predict_inst(state, **case["kwargs"])
            o.clicks[case["name"]] = np.asarray(masks).reshape(-1, *masks.shape[-2:]) > 0.5
    return o


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def deviation(ref: Outputs, other: Outputs) -> Deviation:
    """How far ``other`` is from ``ref`` (see the module docstring)."""
    jaccards, score_diff, mask_ious, click_ious = [], 0.0, [1.0], [1.0]
    for name, kept in ref.kept.items():
        a, b = set(kept.tolist()), set(other.kept[name].tolist())
        jaccards.append(1.0 if not (a | b) else len(a & b) / len(a | b))
        score_diff = max(score_diff, float(np.abs(ref.scores[name] - other.scores[name]).max()))
        index_a, index_b = {q: i for i, q in enumerate(kept)}, {q: i for i, q in enumerate(other.kept[name])}
        for q in a & b:
            mask_ious.append(_iou(ref.masks[name][index_a[q]], other.masks[name][index_b[q]]))
    for name, masks in ref.clicks.items():
        click_ious += [_iou(x, y) for x, y in zip(masks, other.clicks[name])]
    return Deviation(float(np.mean(jaccards)), score_diff, min(mask_ious), min(click_ious))


def measure(
    preset: str, workdir: Path, image: Path, modes: tuple[str, ...] = ("bf16", "int8"), seed: int = 0, threads: int = 1
) -> dict[str, Deviation]:
    """The yardstick ("official bf16") and each of our modes against our fp32, on one photo."""
    from sam3.device import resolve_precision
    from sam3.inference.runtime import prepare_model

    off32 = run_official_outputs(preset, workdir, image, seed=seed, threads=threads)
    off16 = run_official_outputs(
        preset, workdir, image, autocast="bf16", thresholds=off32.thresholds, seed=seed, threads=threads
    )
    result = {"official bf16": deviation(off32, off16)}
    ours32 = run_our_outputs(load_ours(workdir / "sam3.pt", preset), image, off32.thresholds)
    result["ours fp32 vs official fp32"] = deviation(off32, ours32)
    for mode in modes:
        model = load_ours(workdir / "sam3.pt", preset)
        precision = resolve_precision(mode, "cpu")
        prepare_model(model, precision)
        result[f"ours {mode}"] = deviation(ours32, run_our_outputs(model, image, off32.thresholds, precision))
    return result
