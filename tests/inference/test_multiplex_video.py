"""SAM 3.1 video tracking at the tiny preset (buckets of 4) with the development weights on a real clip: many
detected objects share buckets (a state of several buckets, new objects joining free slots), every tracked
object comes back on every frame, removal frees a slot and drops an emptied bucket."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.conftest import VIDEO_FRAMES


@pytest.fixture(scope="module")
def predictor():
    from sam3.build_multiplex import build_multiplex_model
    from sam3.dev_weights import make_visible
    from sam3.inference.association import TrackingHeuristics
    from sam3.inference.video_predictor import VideoPredictor

    if not VIDEO_FRAMES.is_dir():
        pytest.skip(f"the video frames {VIDEO_FRAMES} are absent")
    torch.manual_seed(0)
    model = make_visible(build_multiplex_model(preset="tiny", random_weights=True, device="cpu", load_from_HF=False))
    # IoU for the NMS and a low bar for new objects: random masks overlap, and many objects must appear at once
    rules = dataclasses.replace(
        TrackingHeuristics.sam31(),
        det_nms_use_iom=False,
        det_nms_thresh=0.7,
        score_threshold_detection=0.3,
        new_det_thresh=0.3,
        hotstart_delay=0,
    )
    return VideoPredictor(model, rules)


@torch.inference_mode()
def test_many_objects_share_buckets(predictor):
    session = predictor.start_session(str(VIDEO_FRAMES))
    try:
        first = predictor.add_prompt(session, 0, text="a person")
        m = predictor.model.config.tracker.multiplex_count
        assert len(first.obj_ids) > m, first.obj_ids
        assert max(b.state.num_buckets for b in session.batches) >= 2  # one state holds several buckets
        frames = list(predictor.propagate(session, "forward", start_frame=0, max_frames=4))
        tracked = sorted(i for b in session.batches for i in b.obj_ids)
        assert [f.frame_idx for f in frames] == [0, 1, 2, 3, 4]
        assert set(frames[-1].obj_ids) <= set(tracked) and len(frames[-1].obj_ids) > m
        for batch in session.batches:  # every slot of a state holds one of its objects, in order
            assert batch.state.num_objects == len(batch.obj_ids)
            assert batch.bank.cond and all(
                e.obj_ptr.shape[0] == batch.state.num_buckets for e in batch.bank.cond.values()
            )
        victim = tracked[0]
        holder = next(b for b in session.batches if victim in b.obj_ids)
        before = holder.state.num_buckets
        assert predictor.remove_object(session, victim)
        after = list(predictor.propagate(session, "forward", start_frame=0, max_frames=2))
        assert all(victim not in f.obj_ids for f in after)
        assert holder.state.num_buckets <= before and victim not in holder.obj_ids
    finally:
        predictor.close_session(session)
