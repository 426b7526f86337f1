"""Tracker parity with the official ``sam3==0.1.4`` (random weights, CPU fp32).

An oracle subprocess (``tests/parity/oracle/tracker_official.py``) builds the official memory attention,
memory encoder and ``Sam3TrackerPredictor`` (no backbone) at one preset's sizes, and saves its weights,
inputs and outputs; our ``Sam3Tracker`` loads the same weights strictly and must reproduce every output within
``max|ours - official| <= 1e-4 * max(1, max|official|)``: the memory attention (1-3 memory frames, 0-5
pointers), the memory encoder, and whole ``track_step`` sequences (clicks, masks, a correction with the
previous logits, reverse tracking, more conditioning frames than the attention takes, memory selection on
and off), with the same memory-bank bookkeeping on both sides. The tiny preset runs in the quick suite;
short sequences at the released sizes are marked ``full``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sam3.config import Sam3Config, get_config
from sam3.modeling.tracker.state import MemoryBank, PointInputs
from sam3.modeling.tracker.tracker import Sam3Tracker
from tests.parity.harness import RTOL, run_oracle

FIELDS = [  # (ours, official)
    ("pred_masks", "pred_masks"),
    ("pred_masks_high_res", "pred_masks_high_res"),
    ("obj_ptr", "obj_ptr"),
    ("object_score_logits", "object_score_logits"),
    ("maskmem_features", "maskmem_features"),
    ("maskmem_pos", "maskmem_pos_enc"),
    ("iou_score", "iou_score"),
    ("eff_iou_score", "eff_iou_score"),
]


def _rel_err(ours: torch.Tensor, official: torch.Tensor) -> float:
    assert ours.shape == official.shape, (ours.shape, official.shape)
    return (ours.float() - official.float()).abs().max().item() / max(1.0, official.abs().max().item())


def run_official(cfg: Sam3Config, workdir: Path, scenarios: str | None = None) -> dict:
    t = cfg.tracker
    # The official heads hard-code these sizes; the preset must keep them.
    assert (t.mem_dim, t.num_maskmem, t.mask_decoder_mlp_dim, t.mask_decoder_depth, t.mask_in_chans) == (
        64,
        7,
        2048,
        2,
        16,
    )
    path = workdir / "official.pt"
    args = [
        str(cfg.image_size),
        str(cfg.vision.patch_size),
        str(t.memory_attention_layers),
        str(t.memory_attention_ffn),
    ]
    run_oracle("tracker_official.py", str(path), *args, *([scenarios] if scenarios else []), threads=2, timeout=1800)
    return torch.load(path, weights_only=False)


def load_ours(cfg: Sam3Config, official: dict) -> Sam3Tracker:
    model = Sam3Tracker(cfg).eval()
    model.load_state_dict(official["state_dict"], strict=True)
    return model


def compare_components(cfg: Sam3Config, ours: Sam3Tracker, official: dict) -> list[str]:
    """Memory attention and memory encoder on the official inputs; returns failure lines."""
    failures = []
    g = cfg.feature_size
    with torch.inference_mode():
        for i, case in enumerate(official["memory_attention"]):
            out = ours.memory_attention(
                *(case[k].transpose(0, 1) for k in ("src", "src_pos", "mem", "mem_pos")), (g, g), case["nptr"]
            )
            if (err := _rel_err(out, case["out"].transpose(0, 1))) > RTOL:
                failures.append(f"memory attention case {i}: {err:.3g}")
        for i, case in enumerate(official["memory_encoder"]):
            feat, pos = ours.maskmem_backbone(case["pix"], case["mask"])
            for what, mine, theirs in (("features", feat, case["feat"]), ("pos", pos, case["pos"])):
                if (err := _rel_err(mine, theirs)) > RTOL:
                    failures.append(f"memory encoder case {i} {what}: {err:.3g}")
    return failures


def compare_sequences(ours: Sam3Tracker, official: dict) -> tuple[list[str], float]:
    """Replay every official ``track_step`` sequence; returns failure lines and the worst relative error."""
    failures, worst = [], 0.0
    default = ours.use_memory_selection
    with torch.inference_mode():
        for name, sc in official["scenarios"].items():
            ours.use_memory_selection = sc["memsel"]
            run = official["track"][name]
            bank, last_low = MemoryBank(), {}
            for step, rec in zip(sc["steps"], run["steps"]):
                t = step["frame"]
                fpn, pos = run["frames"][t]
                b = rec["out"]["obj_ptr"].shape[0]
                batched = [x.expand(b, -1, -1, -1) for x in (*fpn, pos)]
                feats = ours.prepare_features(batched[:3], [None, None, batched[3]])
                points = prev = None
                if "coords" in rec:
                    points = PointInputs(rec["coords"], rec["labels"])
                    if step["kind"] == "correct":
                        prev = torch.clamp(last_low[t], -32, 32)
                out = ours.track_step(
                    t,
                    step["init"],
                    feats,
                    bank,
                    sc["num_frames"],
                    point_inputs=points,
                    mask_inputs=rec.get("mask"),
                    reverse=step.get("reverse", False),
                    prev_mask_logits=prev,
                )
                last_low[t] = out.pred_masks
                if step["cond"]:
                    bank.non_cond.pop(t, None)
                bank.add(t, out.to_memory(), step["cond"])
                for mine, theirs in FIELDS:
                    if theirs not in rec["out"]:
                        continue
                    err = _rel_err(getattr(out, mine), rec["out"][theirs])
                    worst = max(worst, err)
                    if err > RTOL:
                        failures.append(f"{name} frame {t} ({step['kind']}) {mine}: {err:.3g}")
    ours.use_memory_selection = default
    return failures, worst


@pytest.fixture(scope="module")
def tiny_official(oracle, tmp_path_factory):
    return run_official(get_config("tiny"), tmp_path_factory.mktemp("tracker_parity"))


def test_memory_attention_and_encoder(tiny_official):
    cfg = get_config("tiny")
    failures = compare_components(cfg, load_ours(cfg, tiny_official), tiny_official)
    assert not failures, "\n".join(failures)


def test_track_step_sequences(tiny_official):
    cfg = get_config("tiny")
    failures, worst = compare_sequences(load_ours(cfg, tiny_official), tiny_official)
    print(f"\ntracker track_step parity (tiny): worst relative error {worst:.3g}")
    assert not failures, "\n".join(failures)


@pytest.mark.full
def test_tracker_parity_full_size(oracle, tmp_path_factory):
    """Released sizes (72x72 grid, 1152 input masks, 4 memory-attention layers): short sequences."""
    cfg = get_config("sam3")
    official = run_official(cfg, tmp_path_factory.mktemp("tracker_parity_full"), "short_mask,short_points")
    ours = load_ours(cfg, official)
    failures = compare_components(cfg, ours, official)
    seq_failures, worst = compare_sequences(ours, official)
    print(f"\ntracker track_step parity (sam3 sizes): worst relative error {worst:.3g}")
    assert not failures + seq_failures, "\n".join(failures + seq_failures)
