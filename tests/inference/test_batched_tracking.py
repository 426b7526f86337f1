"""Objects batched per frame (``sam3.inference.batched_tracking``) equal the per-object path: on a real tracking
state (6 clicked objects in 6 batches, one of them prompted on another frame, so two memory layouts), one
``track_frame`` call gives every batch what its own ``Sam3Tracker.track_step`` gives, with and without padding
to the object buckets. fp32, tiny preset, random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sam3.inference.batched_tracking import bucket_size, encode_memories, pad_rows, track_frame
from sam3.inference.video_predictor import VideoPredictor
from sam3.modeling.tracker.memory_gather import plan_memory

HW = (120, 160)
FIELDS = ("pred_masks", "object_score_logits", "obj_ptr", "ious", "maskmem_features", "maskmem_pos", "iou_score")


def test_buckets_and_padding():
    assert [bucket_size(n) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17)] == [1, 2, 4, 4, 8, 8, 16, 16, 32]
    x = torch.arange(6.0).reshape(3, 2)
    padded = pad_rows(x, 4)
    assert padded.shape == (4, 2) and torch.equal(padded[:3], x) and torch.equal(padded[3], x[2])
    assert pad_rows(x, 3) is x


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, coffee):
    """A session with 6 clicked objects tracked over frames 0..2 (5 prompted on frame 0, one on frame 1)."""
    from sam3.build import build_image_model

    torch.manual_seed(0)
    model = build_image_model(preset="tiny", device="cpu", random_weights=True)
    folder = tmp_path_factory.mktemp("frames")
    base = np.asarray(Image.fromarray(coffee).resize((HW[1] * 2, HW[0])))
    for i in range(5):
        Image.fromarray(np.ascontiguousarray(base[:, 8 * i : 8 * i + HW[1]])).save(folder / f"{i:05d}.jpg")
    predictor = VideoPredictor(model)
    session = predictor.start_session(folder)
    with torch.inference_mode():
        for k in range(5):
            predictor.add_prompt(session, 0, points=[[20.0 + 30 * k, 40.0 + 10 * k]], labels=[1], obj_id=k + 1)
        predictor.add_prompt(session, 1, points=[[80.0, 90.0]], labels=[1], obj_id=6)
        list(predictor.propagate(session, "forward", start_frame=0, max_frames=2))
    return predictor, session


@pytest.mark.parametrize("bucket", [True, False])
@torch.inference_mode()
def test_track_frame_equals_track_step_per_batch(tracked, bucket):
    predictor, session = tracked
    tracker, engine = predictor.model.tracker, predictor.engine
    frame = 3
    feats = engine.frame_features(session, frame).tracker
    batches = [b for b in session.batches if b.obj_ids]
    assert len(batches) == 6
    layouts = {plan_memory(tracker, frame, b.bank, session.num_frames, False).layout for b in batches}
    assert len(layouts) == 2  # two memory-attention groups in one call

    expected = [
        tracker.track_step(frame, False, feats.expand(len(b.obj_ids)), b.bank, session.num_frames, run_mem_encoder=True)
        for b in batches
    ]
    got = track_frame(
        tracker,
        feats,
        [b.bank for b in batches],
        [len(b.obj_ids) for b in batches],
        frame,
        session.num_frames,
        reverse=False,
        run_mem_encoder=True,
        bucket=bucket,
    )
    for e, g in zip(expected, got):
        for name in FIELDS:
            torch.testing.assert_close(getattr(g, name), getattr(e, name), rtol=1e-5, atol=1e-4, msg=name)
        torch.testing.assert_close(g.eff_iou_score.reshape(()), e.eff_iou_score.reshape(()), rtol=1e-5, atol=1e-6)

    # the memory encoder once for all objects equals it per object
    high = torch.cat([e.pred_masks_high_res for e in expected])
    scores = torch.cat([e.object_score_logits for e in expected])
    enc, pos = encode_memories(tracker, feats, high, scores, bucket)
    for k in range(len(expected)):
        one, one_pos = tracker.encode_new_memory(feats.image_embed, high[k : k + 1], scores[k : k + 1], False)
        torch.testing.assert_close(enc[k : k + 1], one, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(pos[k : k + 1], one_pos)
