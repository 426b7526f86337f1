"""The video predictor at the tiny preset on real videos: a generated mp4 (PyAV) and a folder of JPEG frames.

Random weights: detection scores sit around 0.3, so the thresholds are lowered to get a few objects. What
is checked is behaviour (frame order of each direction, result shapes and invariants, partial re-tracking
after clicks, removal, reset, close, clear errors); numerical agreement with the official predictor is
``tests/parity/test_video_parity.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sam3.inference.association import TrackingHeuristics
from sam3.inference.video_io import VideoReadError
from sam3.inference.video_predictor import Sam3VideoPredictor, SessionExists, SessionNotFound

NUM_FRAMES = 5
HW = (120, 160)  # small frames keep the video-size work cheap
HEURISTICS = TrackingHeuristics(score_threshold_detection=0.2, new_det_thresh=0.2, det_nms_thresh=0.5,
                                hotstart_delay=0)


def _frames(coffee) -> list[np.ndarray]:
    base = np.asarray(Image.fromarray(coffee).resize((HW[1] * 2, HW[0])))
    return [np.ascontiguousarray(base[:, 8 * i : 8 * i + HW[1]]) for i in range(NUM_FRAMES)]  # a slow pan


@pytest.fixture(scope="module")
def model():
    from sam3.build import build_sam3_image_model

    torch.manual_seed(0)
    return build_sam3_image_model(preset="tiny", device="cpu", random_weights=True)


@pytest.fixture
def predictor(model):
    return Sam3VideoPredictor(model, HEURISTICS)


@pytest.fixture(scope="module")
def mp4(tmp_path_factory, coffee):
    from tests.inference.test_video_io import write_mp4  # PyAV, only for this fixture

    path = tmp_path_factory.mktemp("video") / "pan.mp4"
    write_mp4(path, _frames(coffee))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory, coffee):
    path = tmp_path_factory.mktemp("frames")
    for i, f in enumerate(_frames(coffee)):
        Image.fromarray(f).save(path / f"{i:05d}.jpg", quality=95)
    return path


def _check_result(r, frame_idx: int) -> None:
    """Shapes, dtypes and the invariants every returned frame has."""
    n = r.num_objects
    assert r.frame_idx == frame_idx
    assert r.obj_ids.dtype == np.int64 and list(r.obj_ids) == sorted(set(r.obj_ids.tolist()))
    assert r.masks.shape == (n, *HW) and r.masks.dtype == bool
    assert r.scores.shape == (n,) and r.boxes_xyxy.shape == (n, 4)
    assert (r.masks.sum(axis=0) <= 1).all(), "a pixel belongs to at most one object"
    for mask, box in zip(r.masks, r.boxes_xyxy):
        ys, xs = np.nonzero(mask)
        if len(xs):  # boxes are those of the masks before the overlap rule: they contain the final mask
            assert box[0] <= xs.min() and box[1] <= ys.min() and box[2] >= xs.max() and box[3] >= ys.max()
    xywh = r.boxes_xywh_normalized
    assert ((xywh >= 0) & (xywh <= 1)).all()


def test_text_prompt_then_both_directions_on_mp4(predictor, mp4):
    info = predictor.start_session(str(mp4))
    assert (info.num_frames, info.width, info.height) == (NUM_FRAMES, HW[1], HW[0])
    assert info.fps == pytest.approx(10.0)
    first = predictor.add_prompt(info.session_id, 2, text="a cup")
    _check_result(first, 2)
    assert first.num_objects >= 1, "lowered thresholds should detect something"
    assert ((first.scores > 0.2) & (first.scores < 1)).all()

    results = list(predictor.propagate_in_video(info.session_id, "both"))
    assert [r.frame_idx for r in results] == [2, 3, 4, 1, 0]  # forward from the start, then backward
    for r in results:
        _check_result(r, r.frame_idx)
    # a second request only fetches, from the earliest frame with outputs by default: the same masks
    again = list(predictor.propagate_in_video(info.session_id, "forward"))
    assert [r.frame_idx for r in again] == [0, 1, 2, 3, 4]
    by_frame = {r.frame_idx: r for r in results}
    for a in again:
        b = by_frame[a.frame_idx]
        assert np.array_equal(a.obj_ids, b.obj_ids) and np.array_equal(a.masks, b.masks)
    assert predictor.close_session(info.session_id)


def test_forward_backward_and_max_frames_on_a_folder(predictor, folder):
    sid = predictor.start_session(str(folder), session_id="folder").session_id
    assert sid == "folder"
    predictor.add_prompt(sid, 0, text="a cup")
    forward = list(predictor.propagate_in_video(sid, "forward", max_frames=2))
    assert [r.frame_idx for r in forward] == [0, 1, 2]
    backward = list(predictor.propagate_in_video(sid, "backward", start_frame=3, max_frames=2))
    assert [r.frame_idx for r in backward] == [2, 1]
    predictor.close_session(sid)


def test_clicks_add_and_refine_then_partial_propagation(predictor, folder):
    sid = predictor.start_session(str(folder)).session_id
    predictor.add_prompt(sid, 0, text="a cup")
    list(predictor.propagate_in_video(sid, "forward"))
    s = predictor.session(sid)
    before = {t: {i: m.clone() for i, m in s.cached_masks[t].items()} for t in range(NUM_FRAMES)}

    r = predictor.add_prompt(sid, 2, points=[[80, 60]], labels=[1], obj_id=42)  # a new object
    _check_result(r, 2)
    assert 42 in s.objects.obj_ids and s.objects.score[42] == 1.0
    refined = int(s.objects.obj_ids[0])
    r = predictor.add_prompt(sid, 2, points=[[40, 30], [120, 90]], labels=[1, 0], obj_id=refined)
    _check_result(r, 2)
    assert [a.kind for a in s.actions[-2:]] == ["add", "refine"]

    results = list(predictor.propagate_in_video(sid, "both", start_frame=2))
    assert [r.frame_idx for r in results] == [2, 3, 4, 1, 0]
    assert s.actions[-1].kind == "propagation_partial" and s.actions[-1].obj_ids == sorted({42, refined})
    for r in results:
        _check_result(r, r.frame_idx)
        # only the clicked objects are re-tracked: every other object keeps its mask
        for i, mask in before[r.frame_idx].items():
            if i not in (42, refined):
                assert torch.equal(s.cached_masks[r.frame_idx][i], mask)
    predictor.close_session(sid)


def test_remove_object(predictor, folder):
    sid = predictor.start_session(str(folder)).session_id
    predictor.add_prompt(sid, 0, text="a cup")
    list(predictor.propagate_in_video(sid, "forward"))
    victim = int(predictor.session(sid).objects.obj_ids[0])
    assert predictor.remove_object(sid, victim)
    assert not predictor.remove_object(sid, victim)  # already gone
    assert not predictor.remove_object(sid, 12345)
    for r in predictor.propagate_in_video(sid, "forward"):
        assert victim not in r.obj_ids
    assert all(victim not in b.obj_ids for b in predictor.session(sid).batches)
    predictor.close_session(sid)


def test_reset_session_forgets_prompts(predictor, folder):
    sid = predictor.start_session(str(folder)).session_id
    predictor.add_prompt(sid, 1, text="a cup")
    predictor.reset_session(sid)
    s = predictor.session(sid)
    assert not s.batches and not s.objects.obj_ids and not s.cached_masks and s.text is None
    with pytest.raises(ValueError, match="add a prompt"):
        predictor.propagate_in_video(sid, "forward")
    r = predictor.add_prompt(sid, 1, text="a cup")  # usable again
    _check_result(r, 1)
    predictor.close_session(sid)


def test_close_session_frees_everything(predictor, folder):
    sid = predictor.start_session(str(folder)).session_id
    predictor.add_prompt(sid, 0, text="a cup")
    s = predictor.session(sid)
    assert s.video.frames.numel() > 0 and s.features
    assert predictor.close_session(sid)
    assert sid not in predictor.sessions
    assert s.video.frames.numel() == 0 and not s.features and not s.batches and not s.text_cache
    assert not predictor.close_session(sid)  # idempotent
    with pytest.raises(SessionNotFound):
        predictor.add_prompt(sid, 0, text="a cup")
    with pytest.raises(SessionNotFound):
        predictor.propagate_in_video(sid)


def test_bad_inputs_raise_clear_errors(predictor, folder, tmp_path, model):
    sid = predictor.start_session(str(folder), session_id="bad").session_id
    with pytest.raises(SessionExists):
        predictor.start_session(str(folder), session_id="bad")
    with pytest.raises(ValueError, match="frame_idx 9 is outside"):
        predictor.add_prompt(sid, 9, text="a cup")
    with pytest.raises(ValueError, match="needs text, points or a box"):
        predictor.add_prompt(sid, 0)
    with pytest.raises(ValueError, match="own prompt"):
        predictor.add_prompt(sid, 0, text="a cup", points=[[1, 1]], obj_id=1)
    with pytest.raises(ValueError, match="2 points but 1 labels"):
        predictor.add_prompt(sid, 0, points=[[1, 1], [2, 2]], labels=[1], obj_id=1)
    with pytest.raises(ValueError, match="normalised"):
        predictor.add_prompt(sid, 0, boxes=[0.5, 0.5, 1.5, 0.2])
    with pytest.raises(ValueError, match="exactly one box"):
        predictor.add_prompt(sid, 0, boxes=[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]])
    with pytest.raises(ValueError, match="direction"):
        predictor.propagate_in_video(sid, "sideways")
    with pytest.raises(ValueError, match="add a prompt"):
        predictor.propagate_in_video(sid, "forward")
    with pytest.raises(ValueError, match="start_frame 7 is outside"):
        predictor.propagate_in_video(sid, "forward", start_frame=7)
    with pytest.raises(SessionNotFound):
        predictor.add_prompt("nope", 0, text="a cup")
    with pytest.raises(VideoReadError):
        predictor.start_session(str(tmp_path / "missing.mp4"))
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoReadError, match="broken.mp4"):
        predictor.start_session(str(tmp_path / "broken.mp4"))
    predictor.close_session(sid)


def test_a_model_without_tracker_is_refused():
    from sam3.build import build_sam3_image_model

    image_only = build_sam3_image_model(preset="tiny", device="cpu", random_weights=True,
                                        enable_inst_interactivity=False)
    with pytest.raises(ValueError, match="tracker"):
        Sam3VideoPredictor(image_only)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_results(model, folder):
    """The predictor follows the model's device: same frames, ids and (nearly) the same masks on CUDA."""
    import copy

    runs = {}
    for device in ("cpu", "cuda"):
        m = model if device == "cpu" else copy.deepcopy(model).to(device)
        predictor = Sam3VideoPredictor(m, HEURISTICS)
        sid = predictor.start_session(str(folder)).session_id
        first = predictor.add_prompt(sid, 1, text="a cup")
        tracked = list(predictor.propagate_in_video(sid, "forward"))
        click = predictor.add_prompt(sid, 2, points=[[80, 60]], labels=[1], obj_id=42)
        runs[device] = [first, *tracked, click, *predictor.propagate_in_video(sid, "both", start_frame=2)]
        predictor.close_session(sid)
    for a, b in zip(runs["cpu"], runs["cuda"], strict=True):
        _check_result(b, a.frame_idx)
        assert np.array_equal(a.obj_ids, b.obj_ids)
        # cuDNN may convolve in TF32: a few border pixels can flip
        assert (a.masks != b.masks).mean() < 1e-2
