"""Run the UPSTREAM SAM 3.1 video predictor (detect-then-track, multiplexed tracker) on a folder of frames and a plan of
requests; save every output, plus the low-res logits behind each output mask, in EXACTLY the format of
``video_official.py``, whose plan format, ``run_scenario``, ``pack_result`` and ``main`` (saving) this script reuses.

Runs ONLY inside the 3.1 oracle subprocess, from the repository root::

    PYTHONPATH=.oracle31:.oracle .venv/bin/python -P -W ignore tests/parity/oracle/video_upstream31.py \
        --config cfg.json --plan plan.json --out upstream31.pt \
        (--checkpoint sam3.1_multiplex.pt | --seed 0 --save-checkpoint sam3.1_multiplex.pt)

* ``cfg.json``: our ``get_multiplex_config(preset).to_dict()``. ``build_upstream31_tiny`` gives the parts (random
  weights, or ``--checkpoint`` loaded strictly into ``Upstream31``); they are assembled as
  ``build_sam3_multiplex_video_predictor`` does (``Sam3MultiplexPredictorWrapper`` around ``tracker.model``,
  ``Sam3MultiplexTrackingWithInteractivity`` with ``BUILDER_ARGS``, image size from the config) and driven through
  ``Sam3BasePredictor.handle_request`` / ``handle_stream_request``. The checkpoint (``detector.*`` +
  ``tracker.model.*``) is saved after every weight change below, so our side just loads it.
* ``score_gain``: as video_official.py (scorer query projection x gain, presence bias + 4); no object-score shift by
  default (video_official applies none). Optional plan key ``"object_shift"`` (e.g. 4.0, as
  ``sam3/dev_weights.py::make_visible``): added to the object-score bias of both tracker decoders; at random weights
  the interactive decoder scores a click slightly negative, so the clicked mask is blanked (-1024) on its frame.
* ``"heuristics"``: OUR ``TrackingHeuristics`` names (``HEURISTIC_ARGS``); a key that is an upstream constructor
  argument instead (e.g. ``"use_batched_grounding": false``) sets it directly; missing ones keep the builder's value.
  ``high_conf_thresh`` has no counterpart (0.8 hard-coded in ``_associate_det_trk`` / ``_recondition_masklets``);
  ``high_iou_thresh`` -> ``iou_thresh_recondition``, unused while ``use_iom_recondition=True`` (upstream re-conditions
  on IoM >= ``iom_thresh_recondition`` = 0.5). ``max_num_objects`` 10000 (ours: no limit; builder: 16) is sent as
  ``NO_LIMIT`` = 64: upstream's -1 (= 10000) cannot run, the batched post-processing allocates
  postprocess_batch_size x max_num_objects x H x W bools (147 GB at 720p). ``refinement_cond_frame_removal_window`` ->
  ``refinement_detector_cond_frame_removal_window`` (builder: unset, default 120).

Recorded logits: ``build_outputs`` thresholds ``tracker_low_res_masks_global`` (re-conditioned and occlusion-suppressed
in place by the planning phase) and the hole-filled detector masks of new objects; a partial propagation's refined
objects: ``_propogate_tracker_one_frame_local_gpu(run_mem_encoder=True)`` (merged by ``_build_sam2_output``); a clicked
object on its click frame: the hole-filled video-size logits of ``add_sam2_new_points``. ``det_scores``: the kept
detections in upstream's association order (``det_keep.argsort(descending=True)``, NOT query order on CPU). Events:
``new_objects`` / ``hotstart_removed`` from the update plan (upstream never fills ``rank0_metadata``'s removed /
suppressed ids: nothing is hidden retroactively, its keep-alive suppression is computed and dropped),
``reconditioned`` (pairs offered to ``_recondition_masklets``), ``occlusion_suppressed`` (rows the rule changed).

CPU shims (no arithmetic changes), on top of ``shims31.install`` and ``Tensor.cuda`` = identity:
* ``Sam3MultiplexTracking._construct_initial_input_batch``: the session's device (``init_state`` sets cuda just
  before) is set to CPU first (the input batch is moved ``.to(device)``).
* ``Sam3VideoTrackingMultiplexDemo.init_state`` hard-codes cuda for ``device`` / ``storage_device`` (allocation and
  ``.to()`` targets): set to CPU after it (as run_upstream31_tracker.py does).
* The detector's single-frame path (``_build_multigpu_buffer_next_chunk``: ``add_prompt``, clicks) casts the tracker
  FPN levels to bf16 for a multi-GPU all-gather; ``conv_s0`` then fails on CPU (bf16 input, fp32 bias). The fp32
  levels it computed are kept (the batched propagation path never casts).
* ``torch.empty/zeros(pin_memory=True)`` (batched post-processing buffers) need an accelerator: the module
  ``sam3_multiplex_tracking`` sees a ``torch`` whose ``empty`` / ``zeros`` drop ``pin_memory``.
* ``MultiplexState.mux`` / ``demux`` (0/1 fp32 selection matrices) get bf16 stored memories when a click merges a
  singleton state back (upstream relies on CUDA autocast): selected in fp32 and cast back, exact both ways.
* ``Sam3MultiplexPredictorWrapper.__init__`` enters a process-wide CUDA bf16 autocast: exited right away; the
  predictor is built without its constructor (the same autocast, TF32).
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_upstream31_tiny as b31  # noqa: E402  (installs the CPU shims first)
import shims31  # noqa: E402
import video_official as vo  # noqa: E402

import torch  # noqa: E402

# Our TrackingHeuristics field -> Sam3MultiplexBase / Sam3MultiplexTrackingWithInteractivity argument
HEURISTIC_ARGS = {**vo.HEURISTIC_ARGS, "high_iou_thresh": "iou_thresh_recondition"}
OBJECT_SHIFT = 0.0  # the plan's "object_shift" (read by main)
NO_LIMIT = 64  # max_num_objects sent for our "no limit" (10000), see the docstring
# build_sam3_multiplex_video_predictor's arguments (image_size comes from the config)
BUILDER_ARGS = dict(
    score_threshold_detection=0.4, det_nms_thresh=0.1, det_nms_use_iom=True, assoc_iou_thresh=0.1,
    new_det_thresh=0.65, hotstart_delay=15, hotstart_unmatch_thresh=8, hotstart_dup_thresh=8,
    suppress_unmatched_only_within_hotstart=False, suppress_overlapping_based_on_recent_occlusion_threshold=0.7,
    suppress_det_close_to_boundary=True, fill_hole_area=0, recondition_every_nth_frame=16, use_iom_recondition=True,
    iom_thresh_recondition=0.5, masklet_confirmation_enable=True, reconstruction_bbox_iou_thresh=-1,
    reconstruction_bbox_det_score=0.8, max_num_objects=16, postprocess_batch_size=16, use_batched_grounding=True,
    batched_grounding_batch_size=16, max_num_kboxes=0, sprinkle_removal_area=0, is_multiplex=True,
    image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), compile_model=False,
)


# ------------------------------------------------------------------------------------------------ shims
def install_video31_shims() -> None:
    """The CPU shims of the module docstring (idempotent)."""
    shims31.install()
    shims31.install_cuda_identity()
    from sam3.model import multiplex_utils, sam3_multiplex_detector, sam3_multiplex_tracking
    from sam3.model import video_tracking_multiplex_demo as demo

    if getattr(sam3_multiplex_tracking, "_video31_oracle_patched", False):
        return
    sam3_multiplex_tracking._video31_oracle_patched = True
    cpu = torch.device("cpu")

    tracking_cls = sam3_multiplex_tracking.Sam3MultiplexTracking
    construct = tracking_cls._construct_initial_input_batch

    def construct_cpu(self, inference_state, images):
        inference_state["device"] = cpu
        return construct(self, inference_state, images)

    tracking_cls._construct_initial_input_batch = construct_cpu

    demo_cls = demo.Sam3VideoTrackingMultiplexDemo
    tracker_init_state = demo_cls.init_state

    def tracker_init_state_cpu(self, *args, **kwargs):
        state = tracker_init_state(self, *args, **kwargs)
        state["device"] = state["storage_device"] = cpu
        return state

    demo_cls.init_state = tracker_init_state_cpu

    detector_cls = sam3_multiplex_detector.Sam3MultiplexDetector
    grounding, build_chunk = detector_cls.forward_grounding, detector_cls._build_multigpu_buffer_next_chunk

    def grounding_keep_fpn(self, *args, **kwargs):
        out = grounding(self, *args, **kwargs)
        feats = out.get("prev_encoder_out", {}).get("backbone_out", {})
        self._last_fpn = {name: [x.tensors for x in feats[key]["backbone_fpn"]]
                          for name, key in (("interactive", "interactive"), ("sam2", "sam2_backbone_out"))
                          if key in feats}
        return out

    def build_chunk_fp32(self, *args, **kwargs):
        build_chunk(self, *args, **kwargs)
        assert self.world_size == 1
        buffer = kwargs["multigpu_buffer"][kwargs["frame_idx_begin"]]
        for name, levels in self._last_fpn.items():
            for level, feat in enumerate(levels):
                buffer[f"{name}_backbone_fpn_{level}"] = (feat, None)

    detector_cls.forward_grounding = grounding_keep_fpn
    detector_cls._build_multigpu_buffer_next_chunk = build_chunk_fp32

    def exact_select(select):
        def select_any_dtype(self, x):
            if x.dtype == self.mux_matrix.dtype:
                return select(self, x)
            return select(self, x.to(self.mux_matrix.dtype)).to(x.dtype)

        return select_any_dtype

    state_cls = multiplex_utils.MultiplexState
    state_cls.mux, state_cls.demux = exact_select(state_cls.mux), exact_select(state_cls.demux)

    class TorchNoPin:  # what sam3_multiplex_tracking calls ``torch``
        def __getattr__(self, name):
            return getattr(torch, name)

    no_pin = sam3_multiplex_tracking.torch = TorchNoPin()
    for name in ("empty", "zeros"):
        setattr(no_pin, name, lambda *a, _fn=getattr(torch, name), pin_memory=False, **k: _fn(*a, **k))


# ------------------------------------------------------------------------------------------------ model
def upstream_args(heuristics: dict) -> dict:
    """The builder's arguments with the plan's heuristics (our names, or upstream ones) applied."""
    from sam3.model import sam3_multiplex_base as smb
    from sam3.model import sam3_multiplex_tracking as smt

    valid = set()
    for fn in (smb.Sam3MultiplexBase.__init__, smt.Sam3MultiplexTracking.__init__,
               smt.Sam3MultiplexTrackingWithInteractivity.__init__):
        valid |= set(inspect.signature(fn).parameters) - {"self", "kwargs", "tracker", "detector"}
    args = dict(BUILDER_ARGS)
    for key, value in heuristics.items():
        if key == "high_conf_thresh":
            if value != 0.8:
                raise ValueError("high_conf_thresh is hard-coded to 0.8 upstream")
            continue
        if key == "exclusive_reanchor":  # ours only: upstream's association always applies this rule
            if not value:
                raise ValueError("upstream SAM 3.1 always re-anchors exclusively (exclusive_reanchor=True)")
            continue
        name = HEURISTIC_ARGS.get(key, key)
        if name not in valid:
            raise ValueError(f"heuristic {key!r} has no upstream SAM 3.1 counterpart")
        args[name] = NO_LIMIT if name == "max_num_objects" and value == 10000 else value
    return args


def build_upstream31_video_model(cfg: dict, heuristics: dict, seed: int | None, checkpoint: str | None,
                                 score_gain: float = 1.0, bpe_path=b31.DEFAULT_BPE):
    """Upstream ``Sam3MultiplexTrackingWithInteractivity`` at the sizes of ``cfg``; returns (model, state dict in the
    ``sam3.1_multiplex.pt`` layout, score spreading included)."""
    install_video31_shims()
    from sam3.model.sam3_multiplex_base import Sam3MultiplexPredictorWrapper
    from sam3.model.sam3_multiplex_tracking import Sam3MultiplexTrackingWithInteractivity

    if checkpoint is None:
        parts = b31.build_random(cfg, seed, bpe_path)
        if score_gain != 1.0:
            with torch.no_grad():
                parts.detector.dot_prod_scoring.hs_proj.weight.mul_(score_gain)
                parts.detector.dot_prod_scoring.hs_proj.bias.mul_(score_gain)
                parts.detector.transformer.decoder.presence_token_head.layers[2].bias.add_(vo.PRESENCE_SHIFT)
        if OBJECT_SHIFT:
            with torch.no_grad():
                for dec in (parts.tracker.model.interactive_sam_mask_decoder, parts.tracker.model.sam_mask_decoder):
                    dec.pred_obj_score_head.layers[-1].bias.add_(OBJECT_SHIFT)
    else:
        parts = b31.Upstream31(cfg, bpe_path)
        parts.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True), strict=True)
    tracker = Sam3MultiplexPredictorWrapper(model=parts.tracker.model, per_obj_inference=False, fill_hole_area=0,
                                            is_multiplex=True, is_multiplex_dynamic=True)
    tracker.bf16_context.__exit__(None, None, None)  # CUDA autocast: see the docstring
    model = Sam3MultiplexTrackingWithInteractivity(
        tracker=tracker, detector=parts.detector, image_size=cfg["vision"]["image_size"], **upstream_args(heuristics))
    model.eval()
    state = model.state_dict()
    if set(state) != set(parts.state_dict()):
        raise RuntimeError("the assembled model's keys differ from the sam3.1_multiplex.pt layout")
    return model, state


def make_predictor31(model):
    """``Sam3MultiplexVideoPredictor`` without its constructor (no bf16 autocast, no TF32), frames loaded eagerly."""
    from sam3.model.sam3_base_predictor import Sam3BasePredictor
    from sam3.model.sam3_multiplex_video_predictor import Sam3MultiplexVideoPredictor

    predictor = Sam3MultiplexVideoPredictor.__new__(Sam3MultiplexVideoPredictor)
    Sam3BasePredictor.__init__(predictor)
    predictor.model = model
    predictor.session_expiration_sec = 1200
    predictor.default_output_prob_thresh = 0.5
    predictor.async_loading_frames = False
    return predictor


# ------------------------------------------------------------------------------------------------ recording
class LogitRecorder31(vo.LogitRecorder):
    """``video_official.LogitRecorder`` (same ``lowres`` / ``video`` / ``detections`` / ``events`` and ``logits_for``),
    hooked into the upstream 3.1 model (see the module docstring)."""

    def __init__(self, model):  # noqa: C901  (one closure per hook)
        from sam3.model import sam3_multiplex_tracking as smt
        from sam3.model.sam3_tracker_utils import fill_holes_in_mask_scores

        self.lowres, self.video, self.last_filled, self._partial, self.detections = {}, {}, None, None, []
        self.events = {"new_objects": 0, "hotstart_removed": 0, "reconditioned": 0, "occlusion_suppressed": 0}
        build_outputs, planning = model.build_outputs, model.run_tracker_update_planning_phase
        propagate_local, build_sam2_output = model._propogate_tracker_one_frame_local_gpu, model._build_sam2_output
        recondition, suppress = model._recondition_masklets, model._suppress_overlapping_based_on_recent_occlusion
        fill_module = getattr(smt, "_unrecorded_fill_holes", None)  # keep the original across scenarios
        if fill_module is None:
            fill_module = smt._unrecorded_fill_holes = smt.fill_holes_in_mask_scores

        def planning_rec(**kw):
            plan, meta = planning(**kw)
            self.detections.append((kw["frame_idx"], kw["det_out"]["scores"][kw["det_keep"]].detach().clone().float()))
            self.events["new_objects"] += len(plan["new_det_obj_ids"])
            self.events["hotstart_removed"] += len(plan["obj_ids_newly_removed"])
            return plan, meta

        def build_outputs_rec(**kw):
            out = build_outputs(**kw)
            frame, plan = kw["frame_idx"], kw["sam2_update_plan"]
            per = self.lowres.setdefault(frame, {})
            for obj_id, m in zip(kw["tracker_metadata_prev"]["obj_ids_all_gpu"].tolist(),
                                 kw["tracker_low_res_masks_global"]):
                per[obj_id] = m.detach().clone().float()
            if len(plan["new_det_fa_inds"]):
                det = kw["det_out"]["mask"][torch.from_numpy(plan["new_det_fa_inds"])].unsqueeze(1)
                det = fill_holes_in_mask_scores(det, fill_hole_area=model.fill_hole_area,
                                                sprinkle_removal_area=model.sprinkle_removal_area,
                                                fill_holes=True, remove_sprinkles=True)
                for obj_id, m in zip(plan["new_det_obj_ids"].tolist(), det[:, 0]):
                    per[obj_id] = m.detach().clone().float()
            for obj_id in per:
                self.video.get(frame, {}).pop(obj_id, None)
            return out

        def propagate_local_rec(states, *args, **kwargs):
            obj_ids, low, scores = propagate_local(states, *args, **kwargs)
            if kwargs.get("run_mem_encoder"):  # partial propagation (the full one goes through build_outputs)
                self._partial = {int(i): m.detach().clone().float() for i, m in zip(obj_ids, low)}
            return obj_ids, low, scores

        def build_sam2_output_rec(inference_state, frame_idx, refined_obj_id_to_mask=None):
            if refined_obj_id_to_mask and self._partial is not None:  # only the refined objects' masks change
                per = self.lowres.setdefault(frame_idx, {})
                for obj_id in refined_obj_id_to_mask:
                    if int(obj_id) in self._partial:
                        per[int(obj_id)] = self._partial[int(obj_id)]
                        self.video.get(frame_idx, {}).pop(int(obj_id), None)
            self._partial = None
            return build_sam2_output(inference_state, frame_idx, refined_obj_id_to_mask)

        def fill_rec(mask, *args, **kwargs):
            self.last_filled = fill_module(mask, *args, **kwargs)
            return self.last_filled

        def recondition_rec(frame_idx, det_out, pairs, *args, **kwargs):
            self.events["reconditioned"] += len(pairs)
            return recondition(frame_idx, det_out, pairs, *args, **kwargs)

        def suppress_rec(frame_idx, masks, *args, **kwargs):
            before = masks.clone()
            out = suppress(frame_idx, masks, *args, **kwargs)
            self.events["occlusion_suppressed"] += int((out != before).flatten(1).any(1).sum())
            return out

        model.run_tracker_update_planning_phase = planning_rec
        model.build_outputs = build_outputs_rec
        model._propogate_tracker_one_frame_local_gpu = propagate_local_rec
        model._build_sam2_output = build_sam2_output_rec
        model._recondition_masklets = recondition_rec
        model._suppress_overlapping_based_on_recent_occlusion = suppress_rec
        smt.fill_holes_in_mask_scores = fill_rec

    def record_click(self, model, session_state, frame: int, obj_id: int) -> None:
        """After a click: the clicked object's video-size logits (hole-filled) on that frame (one row upstream)."""
        assert self.last_filled is not None and self.last_filled.shape[0] == 1, "add_new_points returns one mask"
        self.video.setdefault(frame, {})[obj_id] = self.last_filled[0, 0].detach().clone().float()
        self.last_filled = None
        self.lowres.get(frame, {}).pop(obj_id, None)


# ------------------------------------------------------------------------------------------------ plan
_run_scenario = vo.run_scenario


def run_scenario31(cfg, scenario, frames_dir, seed, checkpoint, score_gain):
    """``video_official.run_scenario`` on the 3.1 model; prints a per-step summary."""
    args = upstream_args(scenario.get("heuristics", {}))
    print(f"scenario {scenario['name']}: upstream args differing from the builder: "
          f"{ {k: v for k, v in args.items() if BUILDER_ARGS.get(k) != v} }", flush=True)
    result, state, frames = _run_scenario(cfg, scenario, frames_dir, seed, checkpoint, score_gain)
    for k, step in enumerate(result["steps"]):
        ids = [r["obj_ids"].tolist() for r in step["results"]]
        print(f"  [{k}] {step['kind']}{' obj ' + str(step['obj_id']) if 'obj_id' in step else ''}: frames "
              f"{[r['frame_idx'] for r in step['results']]}, objects per frame {[len(i) for i in ids]}, ids {ids}")
        print(f"      det_frames {step['det_frames'].tolist()}, kept per frame {[len(s) for s in step['det_scores']]}, "
              f"scores {[[round(x, 3) for x in s.tolist()] for s in step['det_scores']]}")
    print(f"  events {result['events']}", flush=True)
    return result, state, getattr(frames, "tensors", frames)  # the 3.1 input batch holds a NestedTensor


def main() -> None:
    global OBJECT_SHIFT
    if "--plan" in sys.argv[:-1]:  # video_official's main reads the plan itself; the shift is needed when building
        plan = json.loads(Path(sys.argv[sys.argv.index("--plan") + 1]).read_text())
        OBJECT_SHIFT = float(plan.get("object_shift", 0.0))
    # video_official's main (arguments, the loop, saving), on the 3.1 model, predictor and recorder
    vo.__doc__ = __doc__
    vo.build_official_video_model = build_upstream31_video_model
    vo.make_predictor = make_predictor31
    vo.LogitRecorder = LogitRecorder31
    vo.run_scenario = run_scenario31
    vo.main()


if __name__ == "__main__":
    main()
