"""Run the OFFICIAL image model on one image and a plan of prompts; save every intermediate we compare.

Runs ONLY inside the oracle subprocess, from the repository root::

    PYTHONPATH=.oracle .venv/bin/python -P tests/parity/oracle/run_official.py \
        --config cfg.json --plan plan.json --out official.pt \
        (--checkpoint sam3.pt | --seed 0 --save-checkpoint sam3.pt) [--threads 1]

* ``cfg.json``: our ``Sam3Config.to_dict()``; the official classes are built at these sizes (build_official.py).
* ``plan.json`` (written by ``tests/parity/harness.py``, the single source of the cases)::

      {"image": "photo.png",
       "threshold": "gap" | <float>,
       "grounding": [{"name": ..., "steps": [["reset"], ["text", "a red cat"], ["box", [cx,cy,w,h], true]]}],
       "inst": [{"name": ..., "kwargs": {"point_coords": [[x, y]], "point_labels": [1], "box": [x0,y0,x1,y1],
                 "multimask_output": true, "return_logits": false}, "mask_input_from": <case name or null>}],
       "repeat_text": 0}

  ``threshold="gap"`` picks, from the final grounding of each case, the widest gap between consecutive sorted
  scores that keeps between 1/8 and 1/2 of the queries, and uses its midpoint (random weights give scores
  around 0.4, so the default 0.5 keeps nothing). The threshold used is saved so that our side uses it too.

Everything saved is batch-first with OUR names (see ``tests/parity/harness.py``); numpy results are saved as
tensors so the file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_official  # noqa: E402  (imports shims first: no GPU)
import shims  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def pick_threshold(scores: torch.Tensor) -> tuple[float, float]:
    """Midpoint of the widest score gap that keeps between Q/8 and Q/2 queries -> (threshold, gap)."""
    s = torch.sort(scores.flatten().double(), descending=True).values
    q = s.numel()
    lo, hi = max(1, q // 8), max(1, q // 2)
    gaps = s[lo - 1 : hi - 1] - s[lo:hi]  # gap after keeping k = lo..hi-1 queries
    k = int(torch.argmax(gaps))
    return float((s[lo - 1 + k] + s[lo + k]) / 2), float(gaps[k])


class Recorder:
    """Forward hooks on the official modules; ``self.data`` holds the latest call's tensors (batch-first)."""

    def __init__(self, model):
        self.data: dict = {}
        self.handles = []
        bb = model.backbone
        # The VL backbone calls ``vision_backbone.forward(x)`` directly, which bypasses module hooks: wrap it.
        neck_forward = bb.vision_backbone.forward

        def neck_forward_recorded(*args, **kwargs):
            out = neck_forward(*args, **kwargs)
            self._neck(None, args, out)
            return out

        bb.vision_backbone.forward = neck_forward_recorded
        self._hook(bb.vision_backbone.trunk, self._trunk, pre=self._image)
        self._hook(bb.language_backbone, self._text)
        self._hook(model.geometry_encoder, self._geometry)
        self._hook(model.transformer.encoder, self._encoder, pre=self._encoder_in)
        self._hook(model.transformer.decoder, self._decoder)
        self._hook(model.dot_prod_scoring, self._scoring)
        self._hook(model.segmentation_head.pixel_decoder, self._pixel)
        if model.inst_interactive_predictor is not None:
            sam = model.inst_interactive_predictor.model
            self._hook(sam.sam_prompt_encoder, self._prompt_encoder)
            self._hook(sam.sam_mask_decoder, self._mask_decoder)

    def _hook(self, module, post, pre=None):
        self.handles.append(module.register_forward_hook(post))
        if pre is not None:
            self.handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))

    def _put(self, key, value):
        self.data[key] = value.detach().clone() if torch.is_tensor(value) else value

    # backbone -----------------------------------------------------------------------------------------------
    def _image(self, module, args, kwargs):
        self._put("image", args[0] if args else next(iter(kwargs.values())))

    def _trunk(self, module, args, out):
        self._put("trunk", out[-1])

    def _neck(self, module, args, out):
        fpn, pos, sam2_fpn, sam2_pos = out
        # all levels, including the coarsest one that the VL backbone then drops (scalp)
        self.data["neck_fpn"] = [x.detach().clone() for x in fpn]
        self.data["neck_pos"] = [x.detach().clone() for x in pos]
        if sam2_fpn is not None:
            self.data["neck_sam2_fpn"] = [x.detach().clone() for x in sam2_fpn]
            self.data["neck_sam2_pos"] = [x.detach().clone() for x in sam2_pos]

    def _text(self, module, args, out):
        mask, memory, _embeds = out
        self._put("text_features", memory.transpose(0, 1))  # (L,B,C) -> (B,L,C)
        self._put("text_mask", mask)

    # detector -----------------------------------------------------------------------------------------------
    def _geometry(self, module, args, out):
        feats, mask = out
        self._put("geometry_tokens", feats.transpose(0, 1))
        self._put("geometry_mask", mask)

    def _encoder_in(self, module, args, kwargs):
        self._put("prompt", kwargs["prompt"].transpose(0, 1))
        self._put("prompt_mask", kwargs["prompt_key_padding_mask"])

    def _encoder(self, module, args, out):
        memory = out["memory"]
        self._put("memory", memory.transpose(0, 1))  # (HW,B,C) -> (B,HW,C)
        self._put("memory_pos", out["pos_embed"].transpose(0, 1))

    def _decoder(self, module, args, out):
        hs, refs, presence, _presence_feats = out
        self._put("hs", hs.transpose(1, 2))  # (D,Q,B,C) -> (D,B,Q,C)
        self._put("reference_boxes", refs.transpose(1, 2))
        self._put("presence_logits", presence.transpose(1, 2) if presence.dim() == 3 else presence)

    def _scoring(self, module, args, out):
        self._put("all_pred_logits", out.squeeze(-1))  # (D,B,Q,1) -> (D,B,Q)

    def _pixel(self, module, args, out):
        self._put("pixel_embed", out)

    # interactive --------------------------------------------------------------------------------------------
    def _prompt_encoder(self, module, args, out):
        sparse, dense = out
        self._put("sparse", sparse)
        self._put("dense", dense)

    def _mask_decoder(self, module, args, out):
        masks, iou, tokens, obj = out
        self._put("dec_masks", masks)
        self._put("dec_iou", iou)
        self._put("dec_tokens", tokens)
        self._put("dec_object_score", obj)


def tensorize(x):
    """numpy / nested containers -> tensors (so the file loads with weights_only=True)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, dict):
        return {k: tensorize(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [tensorize(v) for v in x]
    return x


def load_checkpoint(model, path: str) -> None:
    """Strict load of a ``sam3.pt`` with the official image loader's renaming."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    model.load_state_dict(build_official.from_checkpoint_names(state), strict=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoint", help="load this sam3.pt (strict)")
    ap.add_argument("--seed", type=int, default=0, help="without --checkpoint: random weights from this seed")
    ap.add_argument("--save-checkpoint", help="without --checkpoint: also save the random weights here")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--autocast", choices=("bf16", "fp16"), help="run the plan under CPU autocast (the yardstick "
                    "of reduced precision: the official model as released on CUDA, here on the CPU)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shims.install()
    from PIL import Image
    from sam3.model.sam3_image_processor import Sam3Processor

    cfg = json.loads(Path(args.config).read_text())
    plan = json.loads(Path(args.plan).read_text())
    timings: dict = {}
    t0 = time.perf_counter()
    if args.checkpoint:
        model = build_official.build_official_image_model(cfg)
        load_checkpoint(model, args.checkpoint)
    else:
        model = build_official.build_random(cfg, args.seed)
        if args.save_checkpoint:
            torch.save(build_official.to_checkpoint_names(model.state_dict()), args.save_checkpoint)
    timings["build"] = time.perf_counter() - t0
    model.eval()
    rec = Recorder(model)
    processor = Sam3Processor(model, resolution=cfg["vision"]["image_size"], device="cpu",
                              confidence_threshold=0.5)

    # The threshold policy runs between the model and the processor's filtering: the processor reads
    # self.confidence_threshold only after model.forward_grounding returns.
    grounding = model.forward_grounding
    policy = plan.get("threshold", "gap")
    current: dict = {"case": None}

    def forward_grounding_with_threshold(*a, **kw):
        out = grounding(*a, **kw)
        scores = (out["pred_logits"].sigmoid() * out["presence_logit_dec"].sigmoid().unsqueeze(1)).squeeze(-1)
        rec.data["final"] = {k: out[k].detach().clone() for k in
                             ("pred_logits", "pred_boxes", "presence_logit_dec", "pred_masks")}
        rec.data["scores"] = scores.detach().clone()
        if policy == "gap":
            processor.confidence_threshold, rec.data["threshold_gap"] = pick_threshold(scores)
        elif isinstance(policy, dict):  # per case, e.g. the thresholds an fp32 run picked
            processor.confidence_threshold, rec.data["threshold_gap"] = float(policy[current["case"]]), float("nan")
        else:
            processor.confidence_threshold, rec.data["threshold_gap"] = float(policy), float("nan")
        return out

    model.forward_grounding = forward_grounding_with_threshold

    image = Image.open(plan["image"]).convert("RGB")
    result: dict = {"meta": {"config": cfg, "plan": plan, "unmapped_config_fields": build_official.unmapped_fields(cfg),
                             "torch": str(torch.__version__), "threads": torch.get_num_threads()},
                    "grounding": {}, "inst": {}}
    caught: list[str] = []
    import contextlib

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.autocast or "")
    mixed = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    result["meta"]["autocast"] = args.autocast
    with warnings.catch_warnings(record=True) as wlist, mixed:
        warnings.simplefilter("always")
        with torch.inference_mode():
            t0 = time.perf_counter()
            state = processor.set_image(image)
            timings["set_image"] = time.perf_counter() - t0
        bb = {k: rec.data[k] for k in ("image", "trunk", "neck_fpn", "neck_pos")}
        if "neck_sam2_fpn" in rec.data:
            bb.update({k: rec.data[k] for k in ("neck_sam2_fpn", "neck_sam2_pos")})
            sam2 = state["backbone_out"]["sam2_backbone_out"]["backbone_fpn"]
            bb["sam2_conv_s"] = [sam2[0].clone(), sam2[1].clone()]  # after conv_s0 / conv_s1
        result["backbone"] = bb
        result["original_hw"] = [state["original_height"], state["original_width"]]

        timings["grounding"] = {}
        for case in plan.get("grounding", []):
            t0 = time.perf_counter()
            text = None
            current["case"] = case["name"]
            for step in case["steps"]:
                rec.data = {}
                if step[0] == "reset":
                    processor.reset_all_prompts(state)
                elif step[0] == "text":
                    text = step[1]
                    processor.set_text_prompt(text, state)
                elif step[0] == "box":
                    processor.add_geometric_prompt(list(step[1]), bool(step[2]), state)
                else:
                    raise ValueError(f"unknown step {step}")
            timings["grounding"][case["name"]] = time.perf_counter() - t0
            tok = model.backbone.language_backbone.tokenizer
            used_text = text if text is not None else "visual"
            r = {k: v for k, v in rec.data.items() if k not in ("final", "image", "trunk") and not k.startswith("neck")}
            f = rec.data["final"]
            dec = model.transformer.decoder
            with torch.inference_mode():
                # every layer's boxes, with the official head and inverse sigmoid (eval keeps only the last)
                from sam3.model.model_misc import inverse_sigmoid

                hs_sf = r["hs"]  # (D,B,Q,C)
                all_boxes = (dec.bbox_embed(hs_sf) + inverse_sigmoid(r["reference_boxes"])).sigmoid()
            r.update(
                tokens=tok([used_text], context_length=cfg["text"]["context_length"]),
                text=used_text,
                pred_logits=f["pred_logits"].squeeze(-1), pred_boxes=f["pred_boxes"],
                presence_logit=f["presence_logit_dec"], pred_masks=f["pred_masks"],
                all_pred_boxes=all_boxes, threshold=processor.confidence_threshold,
                keep=(r["scores"] > processor.confidence_threshold).flatten(),
                out_masks=state["masks"].clone(), out_masks_logits=state["masks_logits"].clone(),
                out_boxes=state["boxes"].clone(), out_scores=state["scores"].clone(),
            )
            result["grounding"][case["name"]] = r

        runs = []
        first_text = next((c for c in plan.get("grounding", []) if c["steps"][-1][0] == "text"), None)
        for _ in range(plan.get("repeat_text", 0) if first_text else 0):
            processor.reset_all_prompts(state)
            t0 = time.perf_counter()
            processor.set_text_prompt(first_text["steps"][-1][1], state)
            runs.append(time.perf_counter() - t0)
        timings["text_prompt_runs"] = runs
        if runs:
            timings["text_prompt_median"] = statistics.median(runs)

        sam = model.inst_interactive_predictor.model if model.inst_interactive_predictor is not None else None
        if sam is not None:
            result["dense_pe"] = sam.sam_prompt_encoder.get_dense_pe().detach().clone()
        for case in plan.get("inst", []) if sam is not None else []:
            kwargs = {k: (np.asarray(v, dtype=np.float32) if k in ("point_coords", "box") else
                          np.asarray(v, dtype=np.int32) if k == "point_labels" else v)
                      for k, v in case["kwargs"].items()}
            if case.get("mask_input_from"):
                src = result["inst"][case["mask_input_from"]]
                best = int(torch.argmax(src["iou"]))
                kwargs["mask_input"] = src["low_res"][best : best + 1].numpy()
            rec.data = {}
            masks, iou, low_res = model.predict_inst(state, **kwargs)
            r = dict(rec.data)
            r.update(masks=masks, iou=iou, low_res=low_res)
            # the full-resolution logits (after hole filling) define the near-threshold band of the masks
            if kwargs.get("return_logits"):
                r["masks_logits_full"] = masks
            else:
                r["masks_logits_full"] = model.predict_inst(state, **{**kwargs, "return_logits": True})[0]
            if "mask_input" in kwargs:
                r["mask_input"] = kwargs["mask_input"]
            result["inst"][case["name"]] = tensorize(r)
        caught = sorted({" ".join(str(w.message).split())[:400] for w in wlist})
    # The hole filling of predict_inst silently degrades to a warning when connected components fail.
    result["meta"]["warnings"] = caught
    result["meta"]["timings"] = timings
    torch.save(result, args.out)
    print(json.dumps({"out": args.out, "timings": timings,
                      "kept": {k: int(v["keep"].sum()) for k, v in result["grounding"].items()},
                      "postprocess_warnings": [w for w in caught if "post-processing" in w]}))


if __name__ == "__main__":
    main()
