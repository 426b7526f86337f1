"""SAM 3.1 image paths against the upstream 3.1 code on identical random weights (tiny preset, CPU fp32).

The oracle subprocess (``tests/parity/oracle/run_upstream31.py``) builds the upstream multiplex detector + tracker
at our tiny sizes with deterministic random weights, saves them in the ``sam3.1_multiplex.pt`` layout and runs:
text / box prompts through its ``Sam3Processor`` on ``Sam3MultiplexDetector`` (with the image model's scores:
``supervise_joint_box_scores`` off for the processor, and the joint logits the builder's setting gives recorded
separately); clicks and boxes through the
tracker's interactive heads (upstream 3.1 has no image click API: that is its click path). Our side loads the
checkpoint strictly with ``build_multiplex_model`` and runs our ``Sam3Processor`` on the same photo.

Criteria as for SAM 3 (``tests/parity/rows.py``): tensors within 1e-4 relative, identical kept sets, binary masks
identical outside the 1e-3 band around the threshold.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.parity.harness31 import ORACLE31_HINT, oracle31_available, run_oracle31
from tests.parity.plan import default_plan
from tests.parity.rows import Row, compare, compare_masks, table

pytestmark = pytest.mark.skipif(not oracle31_available(), reason=ORACLE31_HINT)


def _same_layout(ours: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    """Ours in the upstream's shape where only singleton axes differ ((B, Q) vs (B, Q, 1))."""
    return ours.reshape(upstream.shape) if ours.numel() == upstream.numel() else ours


def _upstream(preset: str, photo, work, threads: int = 1):
    from sam3.config_multiplex import get_multiplex_config

    cfg, plan_path = work / "cfg.json", work / "plan.json"
    cfg.write_text(json.dumps(get_multiplex_config(preset).to_dict()))
    w, h = photo.size
    plan = default_plan(photo.path, (h, w), full=True)
    plan["image"] = str(photo.path)
    plan["inst"] = [c for c in plan["inst"] if not c.get("mask_input_from") and "mask_input" not in c["kwargs"]]
    plan_path.write_text(json.dumps(plan))
    ckpt, out = work / "sam3.1_multiplex.pt", work / "upstream.pt"
    run_oracle31("run_upstream31.py", "--config", str(cfg), "--plan", str(plan_path), "--checkpoint", str(ckpt),
                 "--out", str(out), threads=threads)  # fmt: skip
    return plan, ckpt, torch.load(out, weights_only=False)


def test_image_paths_match_upstream(photo_small, tmp_path_factory):
    _check("tiny", *_upstream("tiny", photo_small, tmp_path_factory.mktemp("sam31")))


@pytest.mark.full
def test_image_paths_match_upstream_full_size(photo_full, tmp_path_factory):
    _check("sam3", *_upstream("sam3", photo_full, tmp_path_factory.mktemp("sam31_full"), threads=2))


@torch.inference_mode()
def _check(preset: str, plan: dict, ckpt, up: dict) -> None:
    from PIL import Image

    from sam3.build_multiplex import build_multiplex_model
    from sam3.inference.processor import Sam3Processor

    model = build_multiplex_model(checkpoint_path=ckpt, preset=preset, device="cpu")
    processor = Sam3Processor(model)
    image = Image.open(plan["image"]).convert("RGB")
    last: dict = {}
    grounding = model.detector.forward_grounding

    def recorded(*args, **kwargs):
        last["out"] = grounding(*args, **kwargs)
        last["joint"] = grounding(*args, **{**kwargs, "joint_scores": True}).pred_logits  # the video detector's
        return last["out"]

    model.detector.forward_grounding = recorded
    rows: list[Row] = []
    state = processor.set_image(image)
    for case in plan["grounding"]:
        r = up["grounding"][case["name"]]
        processor.set_confidence_threshold(r["threshold"])
        for step in case["steps"]:
            if step[0] == "reset":
                processor.reset_all_prompts(state)
            elif step[0] == "text":
                state = processor.set_text_prompt(step[1], state) or state
            else:
                state = processor.add_geometric_prompt(list(step[1]), bool(step[2]), state) or state
        out, p = last["out"], f"{case['name']}"
        rows.append(compare(f"{p}/pred_logits", _same_layout(out.pred_logits, r["pred_logits"]), r["pred_logits"]))
        rows.append(compare(f"{p}/joint_pred_logits", _same_layout(last["joint"], r["joint_pred_logits"]),
                            r["joint_pred_logits"]))  # fmt: skip
        rows.append(compare(f"{p}/pred_boxes", _same_layout(out.pred_boxes, r["pred_boxes"]), r["pred_boxes"]))
        rows.append(compare(f"{p}/pred_masks", _same_layout(out.pred_masks, r["pred_masks"]), r["pred_masks"]))
        rows.append(
            compare(
                f"{p}/presence_logit",
                _same_layout(out.presence_logit, r["presence_logit_dec"]),
                r["presence_logit_dec"],
            )
        )
        keep = out.scores.flatten() > r["threshold"]
        rows.append(Row(f"{p}/kept_set", float((keep != r["keep"]).sum()), float(r["keep"].sum()),
                        torch.equal(keep, r["keep"]), f"{int(keep.sum())} kept"))  # fmt: skip
        rows.append(compare(f"{p}/scores", state.scores, r["scores"]))
        rows.append(compare(f"{p}/boxes", state.boxes, r["boxes"]))
        rows.append(compare(f"{p}/masks_logits", state.masks_logits, r["masks_logits"]))
        rows.append(compare_masks(f"{p}/masks", state.masks, r["masks"], r["masks_logits"]))
    for case in plan["inst"]:
        r = up["inst"][case["name"]]
        kwargs = {
            k: np.asarray(v, dtype=np.int32 if k == "point_labels" else np.float32) if k != "multimask_output" else v
            for k, v in case["kwargs"].items()
            if k != "return_logits"
        }
        _, iou, low = processor.predict_inst(state, **kwargs)
        rows.append(compare(f"inst/{case['name']}/iou", iou, r["iou"]))
        rows.append(compare(f"inst/{case['name']}/low_res", low, r["low_res"]))
    print(f"\nSAM 3.1 image parity ({preset} preset, {len(rows)} rows)\n" + table(rows))
    failed = [r.name for r in rows if not r.passed]
    assert not failed, f"{len(failed)} of {len(rows)} rows differ: {failed}"
