"""Run the OFFICIAL video predictor (``sam3==0.1.4``) on a folder of frames and a plan of requests; save every
per-frame output, plus the low-resolution logits behind each output mask.

Runs ONLY inside the oracle subprocess, from the repository root::

    PYTHONPATH=.oracle .venv/bin/python -P tests/parity/oracle/video_official.py \
        --config cfg.json --plan plan.json --out official.pt \
        (--checkpoint sam3.pt | --seed 0 --save-checkpoint sam3.pt)

* ``cfg.json``: our ``Sam3Config.to_dict()``. The official video model is built at these sizes, mirroring
  ``sam3.model_builder.build_sam3_video_model``: the detector is a ``Sam3ImageOnVideoMultiGPU`` over the same
  parts as the image model of ``build_official.py`` (whose builder and deterministic random weights we reuse),
  and the tracker is that builder's ``Sam3TrackerPredictor`` with memory selection switched on (the video
  builder's ``apply_temporal_disambiguation=True``).
* ``plan.json``::

      {"frames": "<folder of JPEGs>", "score_gain": 1.0,
       "scenarios": [{"name": ..., "heuristics": {<our TrackingHeuristics field>: value, ...},
                      "steps": [["text", frame, "a person"],
                                ["box", frame, [x, y, w, h] (normalised), "a person" | null],
                                ["propagate", "forward" | "backward" | "both", start | null, max | null],
                                ["click", frame, obj_id | "first" | "same", [[x_px, y_px] | "inside", ...] | "inside",
                                 [labels]],
                                ["remove", obj_id | "same"], ["reset"]]}]}

  A click request replaces the object's earlier clicks on that frame (as the official API does), so it lists
  all of them. ``"inside"`` is the pixel of ``obj_id``'s latest output mask on that frame nearest to the
  mask's centroid; ``"first"`` is the smallest id of an object shown (non-empty) on that frame, and ``"same"``
  the object the last ``"first"`` picked. The pixels and ids used are saved so that our side does the same.

Saved (``torch.load(weights_only=True)``): ``{"frames": (T,3,S,S) fp16, "video_hw": (H, W), "scenarios":
[{"name", "events": {heuristic: count}, "steps": [{"kind", "points_px"?, "obj_id"?, "results": [per-frame dict], "det_frames",
"det_scores"}]}]}``, where ``det_frames`` / ``det_scores`` list the frames the step ran detect-then-track on
and the scores of the detections kept on each (after NMS and thresholding). A per-frame dict holds the
official outputs (``obj_ids``, ``probs``, ``boxes_xywh``, ``masks`` as ``np.packbits`` over (N, H, W)) and, per
returned object, the logits its mask was thresholded from: ``lowres`` (N, 4g, 4g) (to be resized bilinearly to
the video size) or, for a clicked object on its click frame, ``video_logits`` (H, W).

CPU shims on top of ``shims.py`` (spec section 6.1): ``Tensor.cuda`` is the identity; tracker state lives on the
CPU; the tracker FPN stays fp32 (the detector casts it to bf16 for a multi-GPU all-gather, which fails on
CPU and is not part of the arithmetic we compare); connected components accept an empty batch; the
predictor is built without its constructor (which downloads weights and calls ``.cuda()``), and its GPU
statistics in log strings are stubbed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_official  # noqa: E402  (imports shims first: no GPU)
import shims  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# Our TrackingHeuristics field -> the official Sam3VideoBase / Sam3VideoInferenceWithInstanceInteractivity
# constructor argument. (high_conf_thresh / high_iou_thresh are hard-coded 0.8 in the official code.)
HEURISTIC_ARGS = {
    "score_threshold_detection": "score_threshold_detection",
    "det_nms_thresh": "det_nms_thresh",
    "assoc_iou_thresh": "assoc_iou_thresh",
    "trk_assoc_iou_thresh": "trk_assoc_iou_thresh",
    "new_det_thresh": "new_det_thresh",
    "hotstart_delay": "hotstart_delay",
    "hotstart_unmatch_thresh": "hotstart_unmatch_thresh",
    "hotstart_dup_thresh": "hotstart_dup_thresh",
    "init_trk_keep_alive": "init_trk_keep_alive",
    "max_trk_keep_alive": "max_trk_keep_alive",
    "min_trk_keep_alive": "min_trk_keep_alive",
    "occlusion_suppress_iou": "suppress_overlapping_based_on_recent_occlusion_threshold",
    "fill_hole_area": "fill_hole_area",
    "recondition_every_nth_frame": "recondition_every_nth_frame",
    "max_num_objects": "max_num_objects",
    "refinement_cond_frame_removal_window": "refinement_detector_cond_frame_removal_window",
}
PRESENCE_SHIFT = 4.0  # added to the random presence logit when the scores are spread (score_gain != 1)
# The released video model's settings (spec section 1.2) that our TrackingHeuristics does not carry.
FIXED_ARGS = {
    "suppress_unmatched_only_within_hotstart": True,
    "suppress_det_close_to_boundary": False,
    "masklet_confirmation_enable": False,
    "decrease_trk_keep_alive_for_empty_masklets": False,
}


# ------------------------------------------------------------------------------------------------ shims
def install_video_shims() -> None:
    """The CPU shims the video path needs on top of ``shims.install`` (idempotent)."""
    shims.install()
    shims.install_cuda_identity()
    from sam3.model import sam3_image, sam3_tracking_predictor, sam3_video_predictor
    from sam3.perflib import connected_components as cc

    if getattr(cc, "_video_oracle_patched", False):
        return
    cc._video_oracle_patched = True

    cc_cpu = cc.connected_components_cpu

    def cc_cpu_empty_ok(input_tensor):
        # torch.stack([]) fails when a frame has no mask at all
        if input_tensor.shape[0] == 0:
            zeros = torch.zeros(input_tensor.shape, dtype=torch.int64, device=input_tensor.device)
            return zeros, zeros.clone()
        return cc_cpu(input_tensor)

    cc.connected_components_cpu = cc_cpu_empty_ok

    init_state = sam3_tracking_predictor.Sam3TrackerPredictor.init_state

    def init_state_cpu(self, *args, **kwargs):
        state = init_state(self, *args, **kwargs)
        state["storage_device"] = torch.device("cpu")
        return state

    sam3_tracking_predictor.Sam3TrackerPredictor.init_state = init_state_cpu

    # The detector casts the tracker FPN levels to bf16 before its (multi-GPU) all-gather; on CPU that cast
    # breaks conv_s0 (bf16 input, fp32 bias). Keep the fp32 levels the detector computed instead.
    detector_cls = sam3_image.Sam3ImageOnVideoMultiGPU
    build_chunk = detector_cls._build_multigpu_buffer_next_chunk
    grounding = detector_cls.forward_grounding

    def grounding_keep_fpn(self, *args, **kwargs):
        out = grounding(self, *args, **kwargs)
        self._last_tracker_fpn = list(out["prev_encoder_out"]["backbone_out"]["sam2_backbone_out"]["backbone_fpn"])
        return out

    def build_chunk_fp32(self, *args, **kwargs):
        build_chunk(self, *args, **kwargs)
        buffer = kwargs["multigpu_buffer"]
        frame = min(kwargs["frame_idx_begin"] + self.rank, kwargs["frame_idx_end"] - 1)
        for level, feat in enumerate(self._last_tracker_fpn):
            buffer[frame][f"tracker_backbone_fpn_{level}"] = (feat, None)

    detector_cls.forward_grounding = grounding_keep_fpn
    detector_cls._build_multigpu_buffer_next_chunk = build_chunk_fp32

    predictor_cls = sam3_video_predictor.Sam3VideoPredictor
    predictor_cls._get_session_stats = lambda self: f"{len(self._ALL_INFERENCE_STATES)} live sessions"
    predictor_cls._get_torch_and_gpu_properties = lambda self: f"torch {torch.__version__} (CPU oracle)"


# ------------------------------------------------------------------------------------------------ model
def build_official_video_model(cfg: dict, heuristics: dict, seed: int | None, checkpoint: str | None,
                               score_gain: float = 1.0, bpe_path=build_official.DEFAULT_BPE):
    """The official ``Sam3VideoInferenceWithInstanceInteractivity`` at the sizes of ``cfg``.

    Weights: deterministic random ones (``seed``; ``build_official.build_random``) or a ``sam3.pt``-layout
    checkpoint (strict). ``score_gain`` scales the random detector's query projection in the dot-product
    scorer: random weights score every query about the same (~0.26); a gain spreads the class logits so that
    a few queries pass the released thresholds and some are confident (>= 0.8, which re-conditioning needs).
    Returns (model, state_dict in the sam3.pt layout).
    """
    install_video_shims()
    from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU
    from sam3.model.sam3_video_inference import Sam3VideoInferenceWithInstanceInteractivity

    if checkpoint is None:
        image_model = build_official.build_random(cfg, seed, bpe_path)
        if score_gain != 1.0:
            with torch.no_grad():
                image_model.dot_prod_scoring.hs_proj.weight.mul_(score_gain)
                image_model.dot_prod_scoring.hs_proj.bias.mul_(score_gain)
                # and make the (random, ~0.3) presence probability close to 1, so that it does not cap the scores
                image_model.transformer.decoder.presence_token_head.layers[2].bias.add_(PRESENCE_SHIFT)
    else:
        image_model = build_official.build_official_image_model(cfg, bpe_path)
    tracker = image_model.inst_interactive_predictor.model
    # build_tracker(apply_temporal_disambiguation=True): the only difference from the image model's tracker
    tracker.use_memory_selection = cfg["tracker"]["use_memory_selection"]
    detector = Sam3ImageOnVideoMultiGPU(
        num_feature_levels=1, backbone=image_model.backbone, transformer=image_model.transformer,
        segmentation_head=image_model.segmentation_head, semantic_segmentation_head=None,
        input_geometry_encoder=image_model.geometry_encoder, use_early_fusion=True, use_dot_prod_scoring=True,
        dot_prod_scoring=image_model.dot_prod_scoring, supervise_joint_box_scores=True,
    )
    missing = sorted(set(HEURISTIC_ARGS) - set(heuristics))
    if missing:  # the official constructor defaults are not the released model's settings: send them all
        raise ValueError(f"heuristics missing from the plan: {missing}")
    kwargs = {HEURISTIC_ARGS[k]: v for k, v in heuristics.items() if k in HEURISTIC_ARGS}
    if kwargs["max_num_objects"] == 10000:
        kwargs["max_num_objects"] = -1  # the released "no limit", which the official code turns into 10000
    # SAM 3.1's rules (our TrackingHeuristics fields): SAM 3 has none of them, so they must be off
    sam31_rules = {"det_nms_use_iom": False, "use_iom_recondition": False, "suppress_det_close_to_boundary": False,
                   "exclusive_reanchor": False, "masklet_confirmation_enable": False, "iom_thresh_recondition": None}
    switched_on = [k for k, off in sam31_rules.items() if off is not None and heuristics.get(k, off) != off]
    if switched_on:
        raise ValueError(f"SAM 3.1 rules the official SAM 3 model does not have: {switched_on}")
    unknown = sorted(set(heuristics) - set(HEURISTIC_ARGS) - {"high_conf_thresh", "high_iou_thresh"} - set(sam31_rules))
    if unknown:
        raise ValueError(f"heuristics the official model does not take: {unknown}")
    for k in ("high_conf_thresh", "high_iou_thresh"):
        if heuristics.get(k, 0.8) != 0.8:
            raise ValueError(f"{k} is hard-coded to 0.8 in the official model")
    model = Sam3VideoInferenceWithInstanceInteractivity(
        detector=detector, tracker=tracker, image_size=cfg["vision"]["image_size"],
        image_mean=tuple(cfg["image_mean"]), image_std=tuple(cfg["image_std"]), compile_model=False,
        **FIXED_ARGS, **kwargs,
    )
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    model.eval()
    state = model.state_dict()
    expected = build_official.to_checkpoint_names(image_model.state_dict()) if checkpoint is None else state
    if set(state) != set(expected):
        raise RuntimeError("video model keys differ from the image model's sam3.pt layout")
    return model, state


def make_predictor(model):
    """A ``Sam3VideoPredictor`` around ``model`` without running its constructor (spec section 6.1)."""
    from sam3.model.sam3_video_predictor import Sam3VideoPredictor

    predictor = Sam3VideoPredictor.__new__(Sam3VideoPredictor)
    predictor.async_loading_frames = False
    predictor.video_loader_type = "cv2"
    predictor.model = model
    return predictor


# ------------------------------------------------------------------------------------------------ recording
class LogitRecorder:
    """Keeps, per frame and object, the logits its latest output mask was thresholded from."""

    def __init__(self, model):
        from sam3.model import sam3_video_inference
        from sam3.model.sam3_tracker_utils import fill_holes_in_mask_scores

        self.lowres: dict[int, dict[int, torch.Tensor]] = {}
        self.video: dict[int, dict[int, torch.Tensor]] = {}
        self.last_filled = None
        self._partial: dict | None = None
        self.detections: list[tuple[int, torch.Tensor]] = []  # (frame, scores) per detect-then-track step
        build_outputs = model.build_outputs
        propagate_local = model._propogate_tracker_one_frame_local_gpu
        build_tracker_output = model._build_tracker_output
        # the module-level name is what add_tracker_new_points calls; keep the original across scenarios
        fill_module = getattr(sam3_video_inference, "_unrecorded_fill_holes", None)
        if fill_module is None:
            fill_module = sam3_video_inference._unrecorded_fill_holes = sam3_video_inference.fill_holes_in_mask_scores

        def build_outputs_rec(**kw):
            out = build_outputs(**kw)
            frame = kw["frame_idx"]
            self.detections.append((frame, kw["det_out"]["scores"].detach().clone().float()))
            per = self.lowres.setdefault(frame, {})
            for obj_id, m in zip(kw["tracker_metadata_prev"]["obj_ids_all_gpu"].tolist(),
                                 kw["tracker_low_res_masks_global"]):
                per[obj_id] = m.detach().clone().float()
            plan = kw["tracker_update_plan"]
            if len(plan["new_det_fa_inds"]):
                det = kw["det_out"]["mask"][torch.from_numpy(plan["new_det_fa_inds"])].unsqueeze(1)
                det = fill_holes_in_mask_scores(det, model.fill_hole_area, True, True)
                for obj_id, m in zip(plan["new_det_obj_ids"].tolist(), det[:, 0]):
                    per[obj_id] = m.detach().clone().float()
            for obj_id in kw.get("reconditioned_obj_ids") or ():
                d = plan["trk_id_to_max_iou_high_conf_det"].get(obj_id)
                if d is not None:
                    per[obj_id] = kw["det_out"]["mask"][d].detach().clone().float()
            for obj_id in per:
                self.video.get(frame, {}).pop(obj_id, None)
            return out

        def propagate_local_rec(states, frame_idx, reverse, run_mem_encoder=False):
            obj_ids, low, scores = propagate_local(states, frame_idx=frame_idx, reverse=reverse,
                                                   run_mem_encoder=run_mem_encoder)
            if run_mem_encoder:  # partial propagation (the full one goes through build_outputs)
                self._partial = {int(i): m.detach().clone().float() for i, m in zip(obj_ids, low)}
            return obj_ids, low, scores

        def build_tracker_output_rec(inference_state, frame_idx, refined_obj_id_to_mask=None):
            # in a partial propagation only the refined objects' masks change; the others come from the cache
            if refined_obj_id_to_mask and self._partial is not None:
                per = self.lowres.setdefault(frame_idx, {})
                for obj_id in refined_obj_id_to_mask:
                    if int(obj_id) in self._partial:
                        per[int(obj_id)] = self._partial[int(obj_id)]
                        self.video.get(frame_idx, {}).pop(int(obj_id), None)
            self._partial = None
            return build_tracker_output(inference_state, frame_idx, refined_obj_id_to_mask)

        def fill_rec(mask, *args, **kwargs):
            out = fill_module(mask, *args, **kwargs)
            self.last_filled = out
            return out

        model.build_outputs = build_outputs_rec
        model._propogate_tracker_one_frame_local_gpu = propagate_local_rec
        model._build_tracker_output = build_tracker_output_rec

        # how often the heuristics acted (the test checks that its plan still exercises them)
        self.events = {"new_objects": 0, "hotstart_removed": 0, "reconditioned": 0, "occlusion_suppressed": 0}
        recondition, hotstart = model._recondition_masklets, model._process_hotstart
        suppress = model._suppress_overlapping_based_on_recent_occlusion

        def recondition_rec(frame_idx, det_out, pairs, *args, **kwargs):
            self.events["reconditioned"] += len(pairs)
            return recondition(frame_idx, det_out, pairs, *args, **kwargs)

        def hotstart_rec(**kw):
            removed, meta = hotstart(**kw)
            self.events["new_objects"] += len(kw["new_det_obj_ids"])
            self.events["hotstart_removed"] += len(removed)
            return removed, meta

        def suppress_rec(frame_idx, masks, *args, **kwargs):
            before = masks.clone()
            out = suppress(frame_idx, masks, *args, **kwargs)
            self.events["occlusion_suppressed"] += int((out != before).flatten(1).any(1).sum())
            return out

        model._recondition_masklets = recondition_rec
        model._process_hotstart = hotstart_rec
        model._suppress_overlapping_based_on_recent_occlusion = suppress_rec
        sam3_video_inference.fill_holes_in_mask_scores = fill_rec

    def record_click(self, model, session_state, frame: int, obj_id: int) -> None:
        """After a click: the clicked object's video-size logits (hole-filled) on that frame."""
        states = [s for s in session_state["tracker_inference_states"] if obj_id in s["obj_ids"]]
        idx = states[0]["obj_ids"].index(obj_id)
        self.video.setdefault(frame, {})[obj_id] = self.last_filled[idx, 0].detach().clone().float()
        self.lowres.get(frame, {}).pop(obj_id, None)

    def logits_for(self, frame: int, obj_ids) -> dict:
        low, vid = self.lowres.get(frame, {}), self.video.get(frame, {})
        out = {"lowres_ids": [], "lowres": [], "video_ids": [], "video_logits": []}
        for obj_id in obj_ids:
            if obj_id in vid:
                out["video_ids"].append(obj_id)
                out["video_logits"].append(vid[obj_id])
            elif obj_id in low:
                out["lowres_ids"].append(obj_id)
                out["lowres"].append(low[obj_id])
        for k in ("lowres", "video_logits"):
            out[k] = torch.stack(out[k]) if out[k] else torch.zeros(0)
        for k in ("lowres_ids", "video_ids"):
            out[k] = torch.tensor(out[k], dtype=torch.int64)
        return out


def pack_result(frame_idx: int, outputs: dict, recorder: LogitRecorder, elapsed: float) -> dict:
    ids = np.asarray(outputs["out_obj_ids"], dtype=np.int64)
    masks = np.asarray(outputs["out_binary_masks"], dtype=bool)
    h, w = masks.shape[-2:]
    return {
        "frame_idx": frame_idx,
        "obj_ids": torch.from_numpy(ids.copy()),
        "probs": torch.from_numpy(np.asarray(outputs["out_probs"], dtype=np.float32).copy()),
        "boxes_xywh": torch.from_numpy(np.asarray(outputs["out_boxes_xywh"], dtype=np.float32).copy()),
        "masks_packed": torch.from_numpy(np.packbits(masks.reshape(masks.shape[0], h * w), axis=1)),
        "seconds": elapsed,
        **recorder.logits_for(frame_idx, ids.tolist()),
    }


def inside_point(mask: np.ndarray) -> list[float]:
    """The pixel (x, y) of a binary (H, W) mask nearest to its centroid."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("cannot click inside an empty mask")
    cy, cx = ys.mean(), xs.mean()
    k = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return [float(xs[k]), float(ys[k])]


# ------------------------------------------------------------------------------------------------ plan
def run_scenario(cfg: dict, scenario: dict, frames_dir: str, seed, checkpoint,
                 score_gain: float) -> tuple[dict, dict, torch.Tensor]:
    model, state = build_official_video_model(cfg, scenario.get("heuristics", {}), seed, checkpoint, score_gain)
    predictor = make_predictor(model)
    recorder = LogitRecorder(model)
    sid = predictor.handle_request({"type": "start_session", "resource_path": frames_dir})["session_id"]
    session_state = predictor._get_session(sid)["state"]
    h, w = session_state["orig_height"], session_state["orig_width"]
    last_masks: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # frame -> (ids, masks) latest outputs
    chosen = None  # the object a "first" click picked
    steps = []
    for step in scenario["steps"]:
        kind, rec = step[0], {"kind": step[0]}
        t0 = time.perf_counter()
        results = []
        if kind == "text":
            _, frame, text = step
            resp = predictor.handle_request({"type": "add_prompt", "session_id": sid, "frame_index": frame,
                                             "text": text})
            results.append(pack_result(frame, resp["outputs"], recorder, time.perf_counter() - t0))
            last_masks[frame] = (resp["outputs"]["out_obj_ids"], resp["outputs"]["out_binary_masks"])
        elif kind == "box":
            _, frame, box_xywh, text = step
            request = {"type": "add_prompt", "session_id": sid, "frame_index": frame,
                       "bounding_boxes": [box_xywh], "bounding_box_labels": [1]}
            if text is not None:
                request["text"] = text
            resp = predictor.handle_request(request)
            results.append(pack_result(frame, resp["outputs"], recorder, time.perf_counter() - t0))
            last_masks[frame] = (resp["outputs"]["out_obj_ids"], resp["outputs"]["out_binary_masks"])
        elif kind == "click":
            _, frame, obj_id, points, labels = step
            if obj_id == "first":  # the smallest id shown (non-empty) on that frame, remembered as "same"
                ids, masks = last_masks[frame]
                chosen = obj_id = int(min(i for i, m in zip(ids, masks) if m.any()))
            elif obj_id == "same":
                obj_id = chosen
            rec["obj_id"] = obj_id
            if points == "inside":
                points = ["inside"]
            ids, masks = last_masks[frame]
            points = [inside_point(masks[list(ids).index(obj_id)]) if p == "inside" else p for p in points]
            rec["points_px"] = torch.tensor(points, dtype=torch.float64)
            rel = [[x / w, y / h] for x, y in points]
            resp = predictor.handle_request({"type": "add_prompt", "session_id": sid, "frame_index": frame,
                                             "points": rel, "point_labels": labels, "obj_id": obj_id})
            recorder.record_click(model, session_state, frame, obj_id)
            results.append(pack_result(frame, resp["outputs"], recorder, time.perf_counter() - t0))
            last_masks[frame] = (resp["outputs"]["out_obj_ids"], resp["outputs"]["out_binary_masks"])
        elif kind == "propagate":
            _, direction, start, max_frames = step
            request = {"type": "propagate_in_video", "session_id": sid, "propagation_direction": direction,
                       "start_frame_index": start, "max_frame_num_to_track": max_frames}
            for resp in predictor.handle_stream_request(request):
                results.append(pack_result(resp["frame_index"], resp["outputs"], recorder,
                                           time.perf_counter() - t0))
                last_masks[resp["frame_index"]] = (resp["outputs"]["out_obj_ids"],
                                                   resp["outputs"]["out_binary_masks"])
                t0 = time.perf_counter()
        elif kind == "remove":
            rec["obj_id"] = obj_id = chosen if step[1] == "same" else step[1]
            predictor.handle_request({"type": "remove_object", "session_id": sid, "obj_id": obj_id})
        elif kind == "reset":
            predictor.handle_request({"type": "reset_session", "session_id": sid})
            last_masks.clear()
        else:
            raise ValueError(f"unknown step {step}")
        rec["results"] = results
        rec["det_frames"] = torch.tensor([f for f, _ in recorder.detections], dtype=torch.int64)
        rec["det_scores"] = [d for _, d in recorder.detections]
        recorder.detections.clear()
        steps.append(rec)
        print(f"  {scenario['name']}: {kind} -> {[(r['frame_idx'], r['obj_ids'].tolist()) for r in results]}",
              flush=True)
    frames = session_state["input_batch"].img_batch
    predictor.handle_request({"type": "close_session", "session_id": sid})
    return {"name": scenario["name"], "steps": steps, "events": recorder.events}, state, frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", help="sam3.pt-layout weights (default: deterministic random weights)")
    ap.add_argument("--save-checkpoint", help="write the random weights here (sam3.pt layout)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = json.loads(Path(args.config).read_text())
    plan = json.loads(Path(args.plan).read_text())
    scenarios, frames, saved = [], None, False
    for scenario in plan["scenarios"]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            result, state, frames = run_scenario(cfg, scenario, plan["frames"], args.seed, args.checkpoint,
                                                 plan.get("score_gain", 1.0))
        if args.save_checkpoint and not saved:
            torch.save(state, args.save_checkpoint)
            saved = True
        scenarios.append(result)
        print(f"scenario {scenario['name']}: {time.perf_counter() - t0:.1f} s, {result['events']}", flush=True)
    h_w = None
    from PIL import Image

    first = sorted(p for p in Path(plan["frames"]).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[0]
    with Image.open(first) as im:
        h_w = (im.height, im.width)
    torch.save({"frames": frames.clone(), "video_hw": torch.tensor(h_w), "scenarios": scenarios}, args.out)
    print(f"saved -> {args.out}")


if __name__ == "__main__":
    main()
