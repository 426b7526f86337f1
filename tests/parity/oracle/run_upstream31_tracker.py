"""Run the UPSTREAM SAM 3.1 multiplex tracker (``Sam3VideoTrackingMultiplexDemo``) through a fixed tracking plan.

Runs ONLY inside the 3.1 oracle subprocess::

    PYTHONPATH=.oracle31:.oracle .venv/bin/python -P -W ignore tests/parity/oracle/run_upstream31_tracker.py \
        --config cfg.json --checkpoint sam3.1.pt --out tracker.pt

Builds the upstream tracker at the config's sizes with the random weights of ``build_upstream31_tiny.build_random``
(saved as ``--checkpoint``), draws random RAW neck levels for F=8 frames of an H x W = 48 x 64 video (both heads;
levels 0/1 go through the head's ``conv_s0`` / ``conv_s1`` as ``forward_image`` does) and runs on CPU fp32, every
frame's features cached up front (never a cache miss, checked): ``add_new_masks`` of objects 1-6 on frame 0
(2 buckets), preflight, ``propagate_in_video`` over frames 0..3, then new objects on the tracked frame 3 placed as
``Sam3MultiplexBaseModel._tracker_add_new_objects`` places them (the best-fit state with enough free slots, else a
new state on the same cache; ``add_new_masks(add_mask_to_memory=True)`` + preflight), then ``propagate_in_video``
over frames 3..7 for every state. Two variants: "join" adds objects 7, 8 (``masks3[:2]``): they fill the 2 free
slots of bucket 2 of the tracked state; "new_state" adds 7, 8, 9: 3 > 2 free slots, so they get a second state.
(Upstream cannot grow the bucket count of a tracked state: ``add_new_masks`` would add a bucket, but the next
propagated frame then fails to concatenate the 2-bucket ``obj_ptr`` of the older frames with the 3-bucket one.)

Saves ``{"inputs": {"interactive", "propagation": F x [3 raw levels (1,C,4g,4g), (1,C,2g,2g), (1,C,g,g)], "pos":
[3 levels (1,C,.,.)], "masks0": bool (6,H,W), "masks3": bool (3,H,W), "video_hw", "num_frames"}, "cond0", "frame1",
"frames", "frame3_after_add", "new_state": {"frames", "frame3_after_add"}}`` (top level: the "join" variant).
``cond0`` / ``frame3_after_add`` hold a stored frame output: ``maskmem_features`` (buckets,C,g,g) **bf16** (as upstream
stores memories), ``maskmem_pos_enc`` (last level), ``obj_ptr`` (buckets,M,C), ``pred_masks`` (N,1,4g,4g),
``object_score_logits`` (N,1), ``image_features`` / ``image_pos_enc`` (g*g,1,C), sorted ``conditioning_objects``;
``frame3_after_add`` also ``storage_key``, ``state`` (index of the state the objects went to) and that state's
multiplex ``assignments``. ``frame1``: the frame-1 ``maskmem_features`` (bf16) and ``obj_ptr``. ``frames``: one dict
per yielded frame in order (``state``, ``frame_idx``, ``obj_ids``, ``low_res`` (N,1,4g,4g) mask logits, ``scores``
(N,1) object-score logits); ``new_state["frames"]`` holds the frames yielded after the add (state 0, then state 1).

CPU workarounds (no change to the arithmetic): ``Tensor.cuda`` is the identity (``_prepare_memory_conditioned_
features`` moves stored memories with ``.cuda()``), and after ``init_state`` (which hard-codes ``torch.device("cuda")``)
the state's ``device`` / ``storage_device`` are set to CPU (they are only ``.to()`` / allocation targets;
``add_new_masks`` moves the input masks ``.to(state["device"])`` and fails on a CPU-only machine).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_upstream31_tiny as b31  # noqa: E402  (installs the CPU shims)
import shims31  # noqa: E402

import torch  # noqa: E402

shims31.install_cuda_identity()

NUM_FRAMES, H, W = 8, 48, 64
OUT_FIELDS = ("maskmem_features", "obj_ptr", "pred_masks", "object_score_logits", "image_features", "image_pos_enc")


def rect_masks(gen: torch.Generator, n: int) -> torch.Tensor:
    """``n`` random axis-aligned rectangles (bool (n, H, W)), each of a different size."""
    masks, sizes = torch.zeros(n, H, W, dtype=torch.bool), set()
    while len(sizes) < n:
        h, w = (int(torch.randint(lo, hi, (1,), generator=gen)) for lo, hi in ((6, 28), (8, 36)))
        if (h, w) in sizes:
            continue
        top, left = (int(torch.randint(0, lim, (1,), generator=gen)) for lim in (H - h + 1, W - w + 1))
        masks[len(sizes), top : top + h, left : left + w] = True
        sizes.add((h, w))
    return masks


def frame_out(out: dict) -> dict:
    """The recorded fields of one stored frame output (detached CPU copies)."""
    rec = {k: out[k].detach().cpu().clone() for k in OUT_FIELDS}
    rec["maskmem_pos_enc"] = out["maskmem_pos_enc"][-1].detach().cpu().clone()
    rec["conditioning_objects"] = sorted(out["conditioning_objects"])
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    cfg = json.loads(Path(args.config).read_text())
    model = b31.build_random(cfg, 0)
    torch.save(model.state_dict(), args.checkpoint)
    t = model.tracker.model
    from sam3.model.data_misc import NestedTensor
    from sam3.model.position_encoding import PositionEmbeddingSine

    c = cfg["d_model"]
    g = cfg["vision"]["image_size"] // cfg["vision"]["patch_size"]
    gen = torch.Generator().manual_seed(2)
    levels = lambda: [torch.randn(1, c, s, s, generator=gen) for s in (4 * g, 2 * g, g)]  # noqa: E731
    interactive, propagation = [], []
    for _ in range(NUM_FRAMES):
        interactive.append(levels())
        propagation.append(levels())
    pe = PositionEmbeddingSine(num_pos_feats=c, normalize=True, scale=None, temperature=10000)
    pos = [pe(x) for x in interactive[0]]
    masks0, masks3 = rect_masks(gen, 6), rect_masks(gen, 3)

    def neck(raw: list, dec) -> dict:  # forward_image: levels 0 / 1 through the head's conv_s0 / conv_s1
        feats = [dec.conv_s0(raw[0]), dec.conv_s1(raw[1]), raw[2]]
        return {"backbone_fpn": [NestedTensor(x, mask=None) for x in feats], "vision_pos_enc": list(pos)}

    cached = {f: (None, {"interactive": neck(interactive[f], t.interactive_sam_mask_decoder),
                         "sam2_backbone_out": neck(propagation[f], t.sam_mask_decoder)}) for f in range(NUM_FRAMES)}

    def new_state():
        st = t.init_state(video_height=H, video_width=W, num_frames=NUM_FRAMES, cached_features=cached)
        st["device"] = st["storage_device"] = torch.device("cpu")  # CPU workaround, see the docstring
        return st

    def check_cache(st) -> None:  # _get_image_feature replaces the whole cache on a miss: there must be none
        assert st["cached_features"] is cached and sorted(cached) == list(range(NUM_FRAMES))

    def propagate(st, start: int, num: int, frames: list, tag: dict) -> None:
        for f, ids, low_res, _video_res, scores in t.propagate_in_video(
                st, start_frame_idx=start, max_frame_num_to_track=num, reverse=False, tqdm_disable=True,
                run_mem_encoder=True):
            frames.append({**tag, "frame_idx": f, "obj_ids": list(ids), "low_res": low_res.detach().cpu().clone(),
                           "scores": scores.detach().cpu().clone()})
        check_cache(st)

    def add_new_objects(states: list, ids: list, masks: torch.Tensor) -> dict:
        """_tracker_add_new_objects: the best-fit state with enough free slots, else a new state."""
        fits = [s for s in states if s["multiplex_state"].available_slots >= len(ids)]
        st = min(fits, key=lambda s: s["multiplex_state"].available_slots) if fits else new_state()
        if not fits:
            states.append(st)
        t.add_new_masks(st, frame_idx=3, obj_ids=ids, masks=masks, add_mask_to_memory=True)
        t.propagate_in_video_preflight(st, run_mem_encoder=True)
        check_cache(st)
        key = next(k for k in ("cond_frame_outputs", "non_cond_frame_outputs") if 3 in st["output_dict"][k])
        return {**frame_out(st["output_dict"][key][3]), "storage_key": key, "state": states.index(st),
                "assignments": [list(b) for b in st["multiplex_state"].assignments]}

    out: dict = {"inputs": {"interactive": interactive, "propagation": propagation, "pos": pos, "masks0": masks0,
                            "masks3": masks3, "video_hw": (H, W), "num_frames": NUM_FRAMES}}
    for variant, n_new in (("join", 2), ("new_state", 3)):  # the tracking up to frame 3 is the same in both
        states, frames = [new_state()], []
        t.add_new_masks(states[0], frame_idx=0, obj_ids=[1, 2, 3, 4, 5, 6], masks=masks0)
        t.propagate_in_video_preflight(states[0], run_mem_encoder=True)
        check_cache(states[0])
        cond0 = frame_out(states[0]["output_dict"]["cond_frame_outputs"][0])
        propagate(states[0], 0, 3, frames, {"state": 0})
        f1 = states[0]["output_dict"]["non_cond_frame_outputs"][1]
        frame1 = {k: f1[k].detach().cpu().clone() for k in ("maskmem_features", "obj_ptr")}
        after_add, n0 = add_new_objects(states, [7, 8, 9][:n_new], masks3[:n_new]), len(frames)
        for i, st in enumerate(states):
            propagate(st, 3, 4, frames, {"state": i})
        if variant == "join":
            out.update(cond0=cond0, frame1=frame1, frames=frames, frame3_after_add=after_add)
        else:
            out["new_state"] = {"frames": frames[n0:], "frame3_after_add": after_add}
    torch.save(out, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
