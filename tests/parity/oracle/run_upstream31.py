"""Run the UPSTREAM SAM 3.1 code on one image: text / box prompts through its processor on the multiplex
detector, clicks and boxes through the tracker's interactive heads (as ``_forward_sam_heads`` runs them).

Runs ONLY inside the 3.1 oracle subprocess, from the repository root::

    PYTHONPATH=.oracle31:.oracle .venv/bin/python -P tests/parity/oracle/run_upstream31.py \
        --config cfg.json --plan plan.json --checkpoint sam3.1.pt --out upstream.pt

It builds the upstream model at the config's sizes with deterministic random weights
(``build_upstream31_tiny.build_random``), saves them as ``--checkpoint`` (the ``sam3.1_multiplex.pt`` layout) and
saves, per grounding case, the processor's kept boxes / scores / masks and the raw detector outputs, and per
click case the interactive heads' low-res logits, IoU and object score.

Upstream 3.1 has no image click API; its click path is the tracker's interactive heads on the interactive
neck: level 2 + ``interactivity_no_mem_embed``, ``conv_s0`` / ``conv_s1`` of levels 0 / 1 precomputed, prompt
coordinates in model-input pixels, a box as two corner points (labels 2, 3) before the clicks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_upstream31_tiny as b31  # noqa: E402  (installs the CPU shims)
from run_official import pick_threshold  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def _grounding(model, cfg, plan, image) -> dict:
    from sam3.model.sam3_image_processor import Sam3Processor

    processor = Sam3Processor(model.detector, resolution=cfg["vision"]["image_size"], device="cpu",
                              confidence_threshold=plan.get("confidence_threshold", 0.5))
    captured = {}
    forward = model.detector.forward_grounding

    def forward_recorded(*a, **kw):
        # random weights score around 0.4: the threshold is the midpoint of the widest score gap (as the SAM 3
        # oracle picks it), set before the processor filters; our side uses the same value
        out = forward(*a, **kw)
        captured.update({k: out[k].detach().clone()
                         for k in ("pred_logits", "pred_boxes", "pred_masks", "presence_logit_dec")})
        scores = (out["pred_logits"].sigmoid() * out["presence_logit_dec"].sigmoid().unsqueeze(1)).squeeze(-1)
        processor.confidence_threshold = pick_threshold(scores)[0]
        captured["threshold"] = processor.confidence_threshold
        captured["keep"] = (scores > processor.confidence_threshold).flatten()
        return out

    model.detector.forward_grounding = forward_recorded
    model.detector.supervise_joint_box_scores = False
    state = processor.set_image(image)
    results = {}
    for case in plan["grounding"]:
        processor.reset_all_prompts(state)
        for step in case["steps"]:
            if step[0] == "text":
                state = processor.set_text_prompt(step[1], state)
            elif step[0] == "box":
                state = processor.add_geometric_prompt(step[1], step[2], state)
        # The multiplex detector is built with supervise_joint_box_scores=True (the video detector: presence
        # folded into the class logit), which the image processor would count twice. The processor runs above
        # with the image semantics (the flag off, as SAM 3's image model); the joint logits of the same prompt
        # are recorded here with the flag as built.
        model.detector.supervise_joint_box_scores = True
        joint = forward(backbone_out=state["backbone_out"], find_input=processor.find_stage,
                        geometric_prompt=state["geometric_prompt"], find_target=None)
        model.detector.supervise_joint_box_scores = False
        captured["joint_pred_logits"] = joint["pred_logits"].detach().clone()
        results[case["name"]] = {
            "boxes": state["boxes"].detach().clone(),
            "scores": state["scores"].detach().clone(),
            "masks": state["masks"].detach().clone(),
            "masks_logits": state["masks_logits"].detach().clone(),
            **captured,
        }
    return results


def _clicks(model, cfg, plan, image) -> dict:
    from sam3.model.sam3_image_processor import Sam3Processor

    size = cfg["vision"]["image_size"]
    processor = Sam3Processor(model.detector, resolution=size, device="cpu")
    state = processor.set_image(image)
    inter = state["backbone_out"]["interactive"]
    levels = [f.tensors if hasattr(f, "tensors") else f for f in inter["backbone_fpn"]]
    tracker = model.tracker.model
    dec, enc = tracker.interactive_sam_mask_decoder, tracker.interactive_sam_prompt_encoder
    high_res = [dec.conv_s0(levels[0]), dec.conv_s1(levels[1])]
    embed = levels[2] + tracker.interactivity_no_mem_embed.view(1, -1, 1, 1)
    w, h = image.size
    scale = torch.tensor([size / w, size / h])
    results = {}
    for case in plan["inst"]:
        kw = case["kwargs"]
        if case.get("mask_input_from") or kw.get("mask_input") is not None:
            continue  # mask prompts: not in this plan (the interactive heads' mask path is SAM 3's)
        coords, labels = [], []
        if kw.get("box") is not None:
            coords += torch.tensor(kw["box"], dtype=torch.float32).view(2, 2).tolist()
            labels += [2, 3]
        if kw.get("point_coords") is not None:
            coords += kw["point_coords"]
            labels += kw["point_labels"]
        pts = torch.tensor(coords, dtype=torch.float32)[None] * scale
        lab = torch.tensor(labels, dtype=torch.int32)[None]
        sparse, dense = enc(points=(pts, lab), boxes=None, masks=None)
        masks, iou, _, obj = dec(image_embeddings=embed, image_pe=enc.get_dense_pe(), sparse_prompt_embeddings=sparse,
                                 dense_prompt_embeddings=dense, multimask_output=kw["multimask_output"],
                                 repeat_image=True, high_res_features=high_res)
        results[case["name"]] = {"low_res": masks[0].detach().clone(), "iou": iou[0].detach().clone(),
                                 "object_score": obj[0].detach().clone()}
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    cfg = json.loads(Path(args.config).read_text())
    plan = json.loads(Path(args.plan).read_text())
    model = b31.build_random(cfg, args.seed)
    torch.save(model.state_dict(), args.checkpoint)
    image = Image.open(plan["image"]).convert("RGB")
    out = {"grounding": _grounding(model, cfg, plan, image), "inst": _clicks(model, cfg, plan, image),
           "meta": {"image_hw": list(np.asarray(image).shape[:2])}}
    torch.save(out, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
