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
from sam3.inference.media_paths import VideoReadError
from sam3.inference.video_predictor import VideoPredictor
from sam3.inference.video_state import SessionClosed
from sam3.inference.video_state import ActionKind

NUM_FRAMES = 5
HW = (120, 160)  # small frames keep the video-size work cheap
HEURISTICS = TrackingHeuristics(score_threshold_detection=0.2, new_det_thresh=0.2, det_nms_thresh=0.5, hotstart_delay=0)


def _frames(coffee) -> list[np.ndarray]:
    base = np.asarray(Image.fromarray(coffee).resize((HW[1] * 2, HW[0])))
    return [np.ascontiguousarray(base[:, 8 * i : 8 * i + HW[1]]) for i in range(NUM_FRAMES)]  # a slow pan


@pytest.fixture(scope="module")
def model():
    from sam3.build import build_image_model

    torch.manual_seed(0)
    return build_image_model(preset="tiny", device="cpu", random_weights=True)


@pytest.fixture
def predictor(model):
    return VideoPredictor(model, HEURISTICS)


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
    first = predictor.add_prompt(info, 2, text="a cup")
    _check_result(first, 2)
    assert first.num_objects >= 1, "lowered thresholds should detect something"
    assert ((first.scores > 0.2) & (first.scores < 1)).all()

    results = list(predictor.propagate(info, "both"))
    assert [r.frame_idx for r in results] == [2, 3, 4, 1, 0]  # forward from the start, then backward
    for r in results:
        _check_result(r, r.frame_idx)
    # a second request only fetches, from the earliest frame with outputs by default: the same masks
    again = list(predictor.propagate(info, "forward"))
    assert [r.frame_idx for r in again] == [0, 1, 2, 3, 4]
    by_frame = {r.frame_idx: r for r in results}
    for a in again:
        b = by_frame[a.frame_idx]
        assert np.array_equal(a.obj_ids, b.obj_ids) and np.array_equal(a.masks, b.masks)
    predictor.close_session(info)


def test_forward_backward_and_max_frames_on_a_folder(predictor, folder):
    sid = predictor.start_session(str(folder), session_id="folder")
    assert sid.session_id == "folder"
    predictor.add_prompt(sid, 0, text="a cup")
    forward = list(predictor.propagate(sid, "forward", max_frames=2))
    assert [r.frame_idx for r in forward] == [0, 1, 2]
    backward = list(predictor.propagate(sid, "backward", start_frame=3, max_frames=2))
    assert [r.frame_idx for r in backward] == [2, 1]
    predictor.close_session(sid)


def test_clicks_add_and_refine_then_partial_propagation(predictor, folder):
    sid = predictor.start_session(str(folder))
    predictor.add_prompt(sid, 0, text="a cup")
    list(predictor.propagate(sid, "forward"))
    s = sid
    before = {t: {i: m.clone() for i, m in s.masks_on(t).items()} for t in range(NUM_FRAMES)}

    r = predictor.add_prompt(sid, 2, points=[[80, 60]], labels=[1], obj_id=42)  # a new object
    _check_result(r, 2)
    assert 42 in s.objects.obj_ids and s.objects.score[42] == 1.0
    refined = int(s.objects.obj_ids[0])
    r = predictor.add_prompt(sid, 2, points=[[40, 30], [120, 90]], labels=[1, 0], obj_id=refined)
    _check_result(r, 2)
    assert [a.kind for a in s.actions[-2:]] == [ActionKind.ADD, ActionKind.REFINE]

    results = list(predictor.propagate(sid, "both", start_frame=2))
    assert [r.frame_idx for r in results] == [2, 3, 4, 1, 0]
    assert s.actions[-1].kind == ActionKind.PROPAGATION_PARTIAL and s.actions[-1].obj_ids == sorted({42, refined})
    for r in results:
        _check_result(r, r.frame_idx)
        # only the clicked objects are re-tracked: every other object keeps its mask
        for i, mask in before[r.frame_idx].items():
            if i not in (42, refined):
                assert torch.equal(s.masks_on(r.frame_idx)[i], mask)
    predictor.close_session(sid)


def test_clicked_objects_alone_never_run_the_detector_neck(predictor, folder, model):
    """Frames that only track clicked objects make the tracker's features alone; a text prompt later on such a
    frame makes the detector's levels from the kept trunk map, the same as from a fresh image pass."""
    neck = model.detector.backbone.vision_backbone
    calls = []
    hooks = [conv.register_forward_hook(lambda *_: calls.append(1)) for conv in neck.convs]
    try:
        sid = predictor.start_session(str(folder))
        predictor.add_prompt(sid, 1, points=[[80, 60]], labels=[1], obj_id=3)
        results = list(predictor.propagate(sid, "forward", start_frame=1))
        assert [r.frame_idx for r in results] == [1, 2, 3, 4] and not calls
        kept = sid.features[4]
        assert kept.backbone is None and kept.trunk is not None
        r = predictor.add_prompt(sid, 4, text="a cup")  # detects on frame 4: the detector neck runs now
        _check_result(r, 4)
        now = sid.features[4]
        assert calls and now.backbone is not None and now.trunk is None
        fresh = model.encode_image(sid.video.frame(4).float().unsqueeze(0))
        for mine, theirs in zip(now.backbone.fpn + now.backbone.pos, fresh.fpn + fresh.pos):
            assert torch.equal(mine, theirs)
        assert torch.equal(now.tracker.image_embed, fresh.sam2_fpn[2])
        assert torch.equal(now.tracker.image_pos, fresh.sam2_pos[2])
        predictor.close_session(sid)
    finally:
        for hook in hooks:
            hook.remove()


def test_remove_object(predictor, folder):
    sid = predictor.start_session(str(folder))
    predictor.add_prompt(sid, 0, text="a cup")
    list(predictor.propagate(sid, "forward"))
    victim = int(sid.objects.obj_ids[0])
    assert predictor.remove_object(sid, victim)
    assert not predictor.remove_object(sid, victim)  # already gone
    assert not predictor.remove_object(sid, 12345)
    for r in predictor.propagate(sid, "forward"):
        assert victim not in r.obj_ids
    assert all(victim not in b.obj_ids for b in sid.batches)
    predictor.close_session(sid)


def test_reset_session_forgets_prompts(predictor, folder):
    sid = predictor.start_session(str(folder))
    predictor.add_prompt(sid, 1, text="a cup")
    predictor.reset_session(sid)
    s = sid
    assert not s.batches and not s.objects.obj_ids and not s.stored_masks and s.text is None
    with pytest.raises(ValueError, match="add a prompt"):
        predictor.propagate(sid, "forward")
    r = predictor.add_prompt(sid, 1, text="a cup")  # usable again
    _check_result(r, 1)
    predictor.close_session(sid)


def test_close_session_frees_everything(predictor, folder):
    sid = predictor.start_session(str(folder))
    predictor.add_prompt(sid, 0, text="a cup")
    s = sid
    assert s.video.cached_bytes() > 0 and s.features
    predictor.close_session(sid)
    assert s.closed and s.video.cached_bytes() == 0 and not s.features and not s.batches and not s.text_cache
    assert not s.stored_masks
    predictor.close_session(sid)  # idempotent
    with pytest.raises(SessionClosed):
        predictor.add_prompt(sid, 0, text="a cup")
    with pytest.raises(SessionClosed):
        predictor.propagate(sid)


def test_bad_inputs_raise_clear_errors(predictor, folder, tmp_path, model):
    sid = predictor.start_session(str(folder), session_id="bad")
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
        predictor.propagate(sid, "sideways")
    with pytest.raises(ValueError, match="add a prompt"):
        predictor.propagate(sid, "forward")
    with pytest.raises(ValueError, match="start_frame 7 is outside"):
        predictor.propagate(sid, "forward", start_frame=7)
    with pytest.raises(VideoReadError):
        predictor.start_session(str(tmp_path / "missing.mp4"))
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoReadError, match="broken.mp4"):
        predictor.start_session(str(tmp_path / "broken.mp4"))
    predictor.close_session(sid)


def test_a_model_without_tracker_is_refused():
    from sam3.build import build_image_model

    image_only = build_image_model(preset="tiny", device="cpu", random_weights=True, enable_inst_interactivity=False)
    with pytest.raises(ValueError, match="tracker"):
        VideoPredictor(image_only)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_results(model, folder):
    """The predictor follows the model's device: same frames, ids and (nearly) the same masks on CUDA; there the
    frames are decoded into pinned memory (non-blocking uploads)."""
    import copy

    runs = {}
    for device in ("cpu", "cuda"):
        m = model if device == "cpu" else copy.deepcopy(model).to(device)
        predictor = VideoPredictor(m, HEURISTICS)
        sid = predictor.start_session(str(folder))
        first = predictor.add_prompt(sid, 1, text="a cup")
        assert sid.video.pixels(1).is_pinned() == (device == "cuda")  # decoded into pinned memory for CUDA
        tracked = list(predictor.propagate(sid, "forward"))
        click = predictor.add_prompt(sid, 2, points=[[80, 60]], labels=[1], obj_id=42)
        runs[device] = [first, *tracked, click, *predictor.propagate(sid, "both", start_frame=2)]
        predictor.close_session(sid)
    for a, b in zip(runs["cpu"], runs["cuda"], strict=True):
        _check_result(b, a.frame_idx)
        assert np.array_equal(a.obj_ids, b.obj_ids)
        # cuDNN may convolve in TF32: a few border pixels can flip
        assert (a.masks != b.masks).mean() < 1e-2


def test_stored_results_and_early_stop(model, folder):
    """``frame_result`` gives back what a propagation returned; ``finish`` keeps the held-back frames."""
    heuristics = TrackingHeuristics(
        score_threshold_detection=0.2, new_det_thresh=0.2, det_nms_thresh=0.5, hotstart_delay=3
    )
    predictor = VideoPredictor(model, heuristics)
    s = predictor.start_session(str(folder))
    predictor.add_prompt(s, 0, text="a cup")
    prop = predictor.propagate(s, "forward")
    assert prop.total == NUM_FRAMES and prop.upcoming(NUM_FRAMES + 1) == list(range(NUM_FRAMES))
    assert prop.step() == [] and prop.step() == []  # held back by the hot-start delay
    assert prop.frames_done == 2 and prop.next_frame == 2 and prop.upcoming() == [2, 3]
    assert predictor.computed_frames(s) == [0]  # the prompted frame only: the others are held back
    held = prop.finish()
    assert [r.frame_idx for r in held] == [0, 1] and prop.finished
    assert prop.frames_done == prop.total and prop.upcoming() == [] and prop.next_frame is None
    assert predictor.computed_frames(s) == [0, 1] and predictor.computed_frames(s, 1, 3) == [1]
    assert s.frames_computed == 2
    assert predictor.objects_in(s, [0, 1]) == sorted({int(i) for r in held for i in r.obj_ids} | set(s.objects.obj_ids))
    for r in held:
        stored = predictor.frame_result(s, r.frame_idx)
        assert np.array_equal(stored.obj_ids, r.obj_ids) and np.array_equal(stored.masks, r.masks)
    assert predictor.frame_result(s, 4) is None
    predictor.close_session(s)


def test_memory_bank_is_pruned_to_the_window(model, tmp_path, coffee):
    """A 40-frame folder with a window of 4: the bank keeps the frames near the current frame and the
    prompted / start frames only, and the outputs stay compact."""
    base = np.asarray(Image.fromarray(coffee).resize((HW[1] * 2, HW[0])))
    for i in range(40):
        Image.fromarray(np.ascontiguousarray(base[:, 2 * i : 2 * i + HW[1]])).save(tmp_path / f"{i}.jpg")
    predictor = VideoPredictor(model, HEURISTICS, memory_frames=4)
    s = predictor.start_session(str(tmp_path))
    predictor.add_prompt(s, 0, points=[[80, 60]], labels=[1], obj_id=7)
    results = list(predictor.propagate(s, "forward"))
    assert [r.frame_idx for r in results] == list(range(40))
    (batch,) = s.batches
    assert set(batch.bank.cond) == {0}
    assert set(batch.bank.non_cond) <= set(range(5)) | set(range(35, 40))
    assert len(s.stored_masks) == 40
    assert s.video.cached_bytes() <= s.video.cache_frames * 3 * 224 * 224 * 2


def test_memory_bank_prune_rule():
    """Without a model: which frames ``MemoryBank.prune`` keeps."""
    from sam3.modeling.tracker.state import FrameMemory, MemoryBank

    mem = FrameMemory(torch.zeros(1, 1, 2, 2), torch.zeros(1, 4), torch.zeros(1, 1))
    bank = MemoryBank(cond={10: mem}, non_cond={t: mem for t in range(100)})
    assert bank.prune(50, 0) == 0 and len(bank.non_cond) == 100  # 0 keeps everything
    bank.prune(90, 3, anchors={30}, keep={0})
    assert sorted(bank.non_cond) == [0, 7, 8, 9, 10, 11, 12, 13, 27, 28, 29, 30, 31, 32, 33, 87, 88, 89, 90, 91, 92, 93]


def test_a_session_prompted_under_bf16_autocast_is_refused_outside_it(predictor, folder):
    """A session's memories belong to the precision of its first prompt: a prompt or a propagation step under
    another one is refused with PrecisionMismatch (not a dtype error inside the tracker); a reset frees it."""
    from sam3.device import PrecisionMismatch

    s = predictor.start_session(str(folder))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        predictor.add_prompt(s, 0, points=[[80, 60]], labels=[1], obj_id=1)
        prop = predictor.propagate(s, "forward", max_frames=2)
        prop.step()
    assert s.compute is torch.bfloat16
    with pytest.raises(PrecisionMismatch, match="prompted under bf16 autocast but this call runs under fp32"):
        prop.step()
    with pytest.raises(PrecisionMismatch):
        predictor.add_prompt(s, 1, points=[[40, 30]], labels=[1], obj_id=2)
    with pytest.raises(PrecisionMismatch):
        predictor.propagate(s, "forward")
    predictor.reset_session(s)
    _check_result(predictor.add_prompt(s, 0, points=[[80, 60]], labels=[1], obj_id=1), 0)  # now fp32
    assert s.compute is None and s.compute_fixed
    predictor.close_session(s)


def test_a_concept_prompt_fixes_the_precision_it_ran_under(predictor, folder):
    """A text prompt starts the session over (its precision is freed) and then runs the detector and tracker
    under its own precision: that one is the session's from then on (a later fp32 propagation is refused)."""
    from sam3.device import PrecisionMismatch

    s = predictor.start_session(str(folder))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        predictor.add_prompt(s, 0, text="a cup")
    assert s.compute is torch.bfloat16 and s.compute_fixed
    with pytest.raises(PrecisionMismatch, match="prompted under bf16 autocast but this call runs under fp32"):
        predictor.propagate(s, "forward")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert len(list(predictor.propagate(s, "forward", max_frames=1))) == 2
    predictor.close_session(s)
