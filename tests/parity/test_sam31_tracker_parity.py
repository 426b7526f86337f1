"""SAM 3.1's multiplexed tracker against the upstream 3.1 tracker (``Sam3VideoTrackingMultiplexDemo``) on
identical random weights and features (tiny preset: buckets of 4, CPU fp32).

The oracle (``run_upstream31_tracker.py``) runs a plan with the upstream demo API; we replay it with
:class:`~sam3.inference.multiplex_tracklets.MultiplexRunner`: masks for 6 objects on frame 0 (2 buckets, the
second half full; overlapping masks), consolidation (memory encoding after the non-overlap rule), propagation
over frames 1-3 with each frame's memory encoded, then new objects on the tracked frame 3 -- either joining
the free slots of the tracked state ("join": 2 objects) or, when they do not fit, a second state ("new
state": 3 objects) -- and propagation of every state over frames 4-7. Compared: every yielded frame's
low-res logits and object scores, the stored memories, pointers and conditioning sets of the prompted frames.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.parity.harness31 import ORACLE31_HINT, oracle31_available, run_oracle31
from tests.parity.rows import Row, compare, table

pytestmark = pytest.mark.skipif(not oracle31_available(), reason=ORACLE31_HINT)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    from sam3.config_multiplex import get_multiplex_config

    work = tmp_path_factory.mktemp("sam31_tracker")
    cfg = work / "cfg.json"
    cfg.write_text(json.dumps(get_multiplex_config("tiny").to_dict()))
    ckpt, out = work / "sam3.1_multiplex.pt", work / "tracker.pt"
    run_oracle31("run_upstream31_tracker.py", "--config", str(cfg), "--checkpoint", str(ckpt), "--out", str(out))
    return ckpt, torch.load(out, weights_only=False)


BF16_ULP = 2.0**-8  # memories are stored rounded to bf16 on both sides: fp32 round-off may flip one rounding step


def _stored(rows: list[Row], name: str, ours, up: dict) -> None:
    """A stored frame entry against the upstream one (memory compared as stored: rounded to bf16)."""
    g = ours.image.shape[-1]
    rows.append(compare(f"{name}/pred_masks", ours.pred_masks, up["pred_masks"]))
    rows.append(compare(f"{name}/object_score_logits", ours.object_score_logits, up["object_score_logits"]))
    rows.append(compare(f"{name}/obj_ptr", ours.obj_ptr, up["obj_ptr"]))
    mem = ours.maskmem_features.float()
    rows.append(compare(f"{name}/maskmem_features (bf16)", mem, up["maskmem_features"].float(), rtol=BF16_ULP))
    rows.append(compare(f"{name}/maskmem_pos", ours.maskmem_pos, up["maskmem_pos_enc"]))
    image = up["image_features"].permute(1, 2, 0).reshape(1, -1, g, g)
    rows.append(compare(f"{name}/image", ours.image, image))
    assert sorted(ours.conditioning) == list(up["conditioning_objects"]), name


def _frames(rows: list[Row], name: str, ours: list, up: list) -> None:
    assert [(o[0], o[1]) for o in ours] == [(u["frame_idx"], list(u["obj_ids"])) for u in up], name
    for (t, ids, entry), u in zip(ours, up):
        rows.append(compare(f"{name}/frame{t}/{ids[0]}../low_res", entry.pred_masks, u["low_res"]))
        rows.append(compare(f"{name}/frame{t}/{ids[0]}../scores", entry.object_score_logits, u["scores"]))


@torch.inference_mode()
@pytest.mark.parametrize("variant", ["join", "new_state"])
def test_multiplexed_tracking_matches_upstream(upstream, variant):
    from sam3.build_multiplex import build_multiplex_model
    from sam3.inference.multiplex_tracklets import MultiplexRunner

    ckpt, up = upstream
    model = build_multiplex_model(checkpoint_path=ckpt, preset="tiny", device="cpu")
    runner = MultiplexRunner(model.tracker.model)
    i = up["inputs"]
    feats = [runner.prepare_features(a, p, i["pos"]) for a, p in zip(i["interactive"], i["propagation"])]
    num_frames, hw = i["num_frames"], tuple(i["video_hw"])
    rows: list[Row] = []

    def track(batches, frames):
        return [(t, list(b.obj_ids), runner.track(b, t, False, feats[t], True)) for b in batches for t in frames]

    first = runner.new_batch(num_frames, hw)
    runner.add_masks(first, 0, [1, 2, 3, 4, 5, 6], i["masks0"], feats[0])
    runner.consolidate(first, feats.__getitem__)
    _stored(rows, "cond0", first.bank.cond[0], up["cond0"])
    ours = track([first], range(0, 4))
    mem1 = first.bank.non_cond[1].maskmem_features.float()
    rows.append(
        compare("frame1/maskmem_features (bf16)", mem1, up["frame1"]["maskmem_features"].float(), rtol=BF16_ULP)
    )
    rows.append(compare("frame1/obj_ptr", first.bank.non_cond[1].obj_ptr, up["frame1"]["obj_ptr"]))
    _frames(rows, "0-3", ours, up["frames"][:4])

    new = [7, 8] if variant == "join" else [7, 8, 9]
    batches = [first]
    target = runner.best_fit(batches, len(new))
    if target is None:
        target = runner.new_batch(num_frames, hw)
        batches.append(target)
    runner.add_masks(target, 3, new, i["masks3"][: len(new)], feats[3])
    runner.consolidate(target, feats.__getitem__)
    ref = up if variant == "join" else up["new_state"]
    added = ref["frame3_after_add"]
    assert batches.index(target) == added["state"]
    assert target.state.buckets == [list(b) for b in added["assignments"]]
    assert (3 in target.bank.cond) == (added["storage_key"] == "cond_frame_outputs")
    _stored(rows, "frame3_after_add", target.bank.get(3), added)
    # the join variant's yields continue the top-level list; the new-state one has its own
    up_after = up["frames"][4:] if variant == "join" else ref["frames"]
    frames = range(3, 8)
    _frames(rows, "3-7", track(batches, frames), up_after)

    print("\n" + table(rows))
    failed = [r.name for r in rows if not r.passed]
    assert not failed, f"{len(failed)} of {len(rows)} rows differ: {failed}"
