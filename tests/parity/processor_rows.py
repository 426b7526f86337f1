"""The processor half of the whole-model parity (``proc/`` rows, see ``tests/parity/harness.py``): our
``Sam3Processor`` end to end on the plan's photo, compared with the official processor's outputs by the
issue's criteria (identical kept sets, scores / boxes within 1e-4 relative, masks identical outside the
1e-3 band around the threshold; clicks likewise).
"""

from __future__ import annotations

import time

import torch

from tests.parity.harness import _Capture, _first_tensor, _inst_kwargs, _inst_result_rows
from tests.parity.plan import case_prompt_raw
from tests.parity.rows import Row, compare, compare_masks


def _make_processor(model):
    from sam3.inference.processor import Sam3Processor

    return Sam3Processor(model)


def _set_threshold(processor, thr: float) -> None:
    if hasattr(processor, "set_confidence_threshold"):
        processor.set_confidence_threshold(thr)
    else:
        processor.confidence_threshold = thr


def _get(state, key):
    try:
        return state[key]
    except (KeyError, TypeError):
        return getattr(state, key, None)


@torch.inference_mode()
def compare_processor(model, off: dict, timings: dict | None = None, captured: dict | None = None) -> list[Row]:
    """Our Sam3Processor end to end on the same image, by the issue's processor-level criteria.

    ``captured`` receives the processor run's pre-processed image and ViT trunk output ("image", "trunk") so
    that :func:`~tests.parity.harness.compare_components` need not run the trunk again.
    """
    from PIL import Image

    plan = off["meta"]["plan"]
    image = Image.open(plan["image"]).convert("RGB")
    processor = _make_processor(model)
    rows: list[Row] = []
    cap = _Capture(model, {"trunk": "detector.backbone.vision_backbone.trunk"})
    last: dict = {}
    grounding = model.detector.forward_grounding

    def recorded(*args, **kwargs):  # the processor's detector call, to read the kept query indices
        out = grounding(*args, **kwargs)
        last["out"] = out
        return out

    model.detector.forward_grounding = recorded
    timings = timings if timings is not None else {}
    try:
        t0 = time.perf_counter()
        state = processor.set_image(image)
        timings["set_image"] = time.perf_counter() - t0
        ins = cap.data.get("trunk.in")
        rows.append(compare("proc/image", ins[0] if ins else None, off["backbone"]["image"]))
        if captured is not None and ins:
            captured.update(image=ins[0], trunk=_first_tensor(cap.data.get("trunk")))
        timings["grounding"] = {}
        for case in plan["grounding"]:
            name, r = case["name"], off["grounding"][case["name"]]
            t0 = time.perf_counter()
            for i, step in enumerate(case["steps"]):
                if i == len(case["steps"]) - 1:
                    _set_threshold(processor, r["threshold"])
                if step[0] == "reset":
                    processor.reset_all_prompts(state)
                elif step[0] == "text":
                    state = processor.set_text_prompt(step[1], state) or state
                else:
                    state = processor.add_geometric_prompt(list(step[1]), bool(step[2]), state) or state
            timings["grounding"][name] = time.perf_counter() - t0
            rows += _processor_rows(f"proc/{name}", state, r, last.get("out"))
            # the service's path: every prompt of the case set at once, one detector run
            if hasattr(processor, "set_prompts"):
                text, boxes, labels = case_prompt_raw(case)
                once = processor.set_prompts(state, text, boxes, [int(v) for v in labels])
                rows += _processor_rows(f"proc_once/{name}", once, r, last.get("out"))
        runs = []
        first_text = next((c for c in plan["grounding"] if c["steps"][-1][0] == "text"), None)
        for _ in range(plan.get("repeat_text", 0) if first_text else 0):
            processor.reset_all_prompts(state)
            if hasattr(processor, "clear_cache"):  # time the text encoder too, as the official call does
                processor.clear_cache()
            t0 = time.perf_counter()
            processor.set_text_prompt(first_text["steps"][-1][1], state)
            runs.append(time.perf_counter() - t0)
        timings["text_prompt_runs"] = runs
        predict = getattr(processor, "predict_inst", None) or model.predict_inst
        for case in plan.get("inst", []):
            name, r = case["name"], off["inst"][case["name"]]
            masks, iou, low = predict(state, **_inst_kwargs(case, r))
            rows += _inst_result_rows(f"proc/inst/{name}", case, r, masks, iou, low)
            if hasattr(model, "predict_inst"):  # the official model-level call (sam3.model.sam3_image)
                masks, iou, low = model.predict_inst(state, **_inst_kwargs(case, r))
                rows += _inst_result_rows(f"proc/model_inst/{name}", case, r, masks, iou, low)
    finally:
        model.detector.forward_grounding = grounding
        cap.close()
    return rows


def _processor_rows(prefix: str, state, r: dict, out) -> list[Row]:
    rows = []
    if out is not None:
        keep = out.scores.flatten() > r["threshold"]
        same = torch.equal(keep, r["keep"].flatten())
        rows.append(
            Row(
                f"{prefix}/kept_set",
                float((keep != r["keep"].flatten()).sum()),
                float(r["keep"].sum()),
                same,
                f"{int(keep.sum())} kept, official {int(r['keep'].sum())}",
            )
        )
    rows.append(compare(f"{prefix}/scores", _get(state, "scores"), r["out_scores"]))
    rows.append(compare(f"{prefix}/boxes", _get(state, "boxes"), r["out_boxes"]))
    probs = _get(state, "masks_logits")
    rows.append(compare(f"{prefix}/masks_logits", probs, r["out_masks_logits"]))
    masks = _get(state, "masks")
    rows.append(
        compare_masks(
            f"{prefix}/masks", masks if masks is not None else torch.zeros(0), r["out_masks"], r["out_masks_logits"]
        )
    )
    return rows
