"""Sam3Tracker: checkpoint names, per-frame step shapes, memory-bank selection rules and bounded memory."""

from __future__ import annotations

import pytest
import torch

from sam3.config import get_config
from sam3.modeling.tracker.state import (
    FrameMemory,
    MemoryBank,
    PointInputs,
    TrackerFeatures,
)
from sam3.modeling.tracker.tracker import Sam3Tracker
from tests.conftest import checkpoint_shapes

PREFIX = "tracker."


@pytest.fixture(scope="module")
def tracker(tiny):
    torch.manual_seed(0)
    return Sam3Tracker(tiny).eval()


def _frame(cfg, batch: int, seed: int, tracker: Sam3Tracker) -> TrackerFeatures:
    """Random tracker-neck features of one frame (the tracker does not care where they come from)."""
    g, c = cfg.feature_size, cfg.d_model
    gen = torch.Generator().manual_seed(seed)
    fpn = [torch.randn(1, c, s, s, generator=gen) for s in (4 * g, 2 * g, g)]
    pos = [torch.randn(1, c, s, s, generator=gen) for s in (4 * g, 2 * g, g)]
    with torch.no_grad():
        return tracker.prepare_features(fpn, pos).expand(batch)


def _track(tracker, cfg, bank, num_frames, frames, batch=2):
    outs = {}
    with torch.no_grad():
        for t in frames:
            # A few distinct frames are enough; the memory bookkeeping is what is exercised.
            out = tracker.track_step(t, False, _frame(cfg, batch, t % 3, tracker), bank, num_frames)
            bank.add(t, out.to_memory(), is_cond=False)
            outs[t] = out
    return outs


def test_state_dict_is_the_checkpoint_layout():
    with torch.device("meta"):
        model = Sam3Tracker(get_config("sam3"))
    sd = model.state_dict()
    assert len(sd) == 309
    assert sum(p.numel() for p in model.parameters()) == 11_743_362
    expected = checkpoint_shapes(PREFIX)
    assert set(sd) == set(expected)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected


def test_click_then_track_shapes(tracker, tiny):
    g, s, c, b = tiny.feature_size, tiny.image_size, tiny.d_model, 2
    bank = MemoryBank()
    clicks = PointInputs(torch.tensor([[[60.0, 80.0]], [[150.0, 40.0]]]), torch.ones(b, 1, dtype=torch.int32))
    with torch.no_grad():
        first = tracker.track_step(0, True, _frame(tiny, b, 0, tracker), bank, 4, point_inputs=clicks)
    assert first.pred_masks.shape == (b, 1, 4 * g, 4 * g)
    assert first.pred_masks_high_res.shape == (b, 1, s, s)
    assert first.ious.shape == (b, 3)  # one click -> three candidates
    assert first.obj_ptr.shape == (b, c) and first.object_score_logits.shape == (b, 1)
    assert first.maskmem_features.shape == (b, tiny.tracker.mem_dim, g, g)
    assert first.maskmem_pos.shape == (b, tiny.tracker.mem_dim, g, g)
    assert first.eff_iou_score.shape == ()
    bank.add(0, first.to_memory(), is_cond=True)
    outs = _track(tracker, tiny, bank, 4, [1, 2, 3], batch=b)
    for out in outs.values():
        assert out.pred_masks.shape == (b, 1, 4 * g, 4 * g)
        assert torch.isfinite(out.pred_masks).all() and torch.isfinite(out.maskmem_features).all()
    assert sorted(bank.non_cond) == [1, 2, 3] and list(bank.cond) == [0]


def test_mask_input_is_the_output(tracker, tiny):
    b, m = 2, tiny.input_mask_size
    mask = torch.zeros(b, 1, m, m)
    mask[0, :, 10:100, 20:120] = 1  # object 1 present, object 2 empty
    with torch.no_grad():
        out = tracker.track_step(0, True, _frame(tiny, b, 0, tracker), MemoryBank(), 3, mask_inputs=mask)
    stride = tiny.vision.patch_size
    # The low-res copy is (input-mask // stride) * 4, not 4g: 328 vs 288 at full size.
    assert out.pred_masks.shape == (b, 1, m // stride * 4, m // stride * 4)
    assert torch.equal(out.pred_masks_high_res, mask * 20 - 10)
    assert out.object_score_logits.flatten().tolist() == [10.0, -10.0]
    assert torch.allclose(out.obj_ptr[1], tracker.no_obj_ptr[0])
    assert torch.equal(out.ious, torch.ones(b, 1))


def test_empty_mask_pointer(tracker, tiny):
    with torch.no_grad():
        ptr = tracker.empty_mask_pointer(_frame(tiny, 3, 0, tracker))
    assert ptr.shape == (1, tiny.d_model)
    assert torch.allclose(ptr, tracker.no_obj_ptr)


@pytest.mark.parametrize("memory_selection", [False, True])
def test_memory_stays_bounded(tracker, tiny, memory_selection):
    g, t = tiny.feature_size, tiny.tracker
    old = tracker.use_memory_selection
    tracker.use_memory_selection = memory_selection
    try:
        bank = MemoryBank()
        mask = torch.zeros(1, 1, tiny.input_mask_size, tiny.input_mask_size)
        mask[..., 40:120, 40:150] = 1
        num_frames = 20
        with torch.no_grad():
            first = tracker.track_step(0, True, _frame(tiny, 1, 0, tracker), bank, num_frames, mask_inputs=mask)
        bank.add(0, first.to_memory(), is_cond=True)
        outs = _track(tracker, tiny, bank, num_frames, range(1, 4), batch=1)
        # Fill the bank past the 16-pointer horizon with copies (the bookkeeping is what is tested here).
        for frame in range(4, 18):
            bank.add(frame, outs[1 + frame % 3].to_memory(), is_cond=False)
        memory, pos, n_ptr = tracker.gather_memory(18, bank, num_frames, 1, False, torch.device("cpu"))
    finally:
        tracker.use_memory_selection = old
    split = tiny.d_model // t.mem_dim
    max_spatial = (t.max_cond_frames_in_attn + t.num_maskmem - 1) * g * g
    max_ptr = (t.max_cond_frames_in_attn + t.max_obj_ptrs_in_encoder - 1) * split
    assert memory.shape == pos.shape and memory.shape[-1] == t.mem_dim
    assert memory.shape[1] - n_ptr <= max_spatial and n_ptr <= max_ptr
    if not memory_selection:
        # Steady state: the conditioning frame + 6 recent frames; its pointer + 15 recent ones.
        assert memory.shape[1] - n_ptr == t.num_maskmem * g * g
        assert n_ptr == t.max_obj_ptrs_in_encoder * split


def _mem(score: float | None = None) -> FrameMemory:
    z = torch.zeros(1, 1)
    return FrameMemory(z, z, z, eff_iou_score=None if score is None else torch.tensor(score))


def test_conditioning_frame_selection():
    bank = MemoryBank(cond={t: _mem() for t in (0, 2, 4, 6, 8)})
    selected, unselected = bank.select_cond_frames(5, 4)
    assert list(selected) == [4, 6, 2, 8]  # nearest before, nearest at/after, then by distance
    assert list(unselected) == [0]
    selected, unselected = bank.select_cond_frames(5, -1)
    assert list(selected) == [0, 2, 4, 6, 8] and not unselected


def test_memory_frame_selection():
    scores = {1: 0.5, 2: 0.0, 3: 0.02, 4: 0.005, 5: 0.3}
    bank = MemoryBank(non_cond={t: _mem(s) for t, s in scores.items()})
    # Forward from 6: scan 5, 4, 3, 2, 1 (frame 0 never); keep scores > 0.01, oldest first.
    assert bank.select_memory_frames(6, 10, False, 16, 0.01) == [1, 3, 5]
    # At most min(num_frames, max) - 1 frames, and the adjacent frame is always included.
    assert bank.select_memory_frames(6, 3, False, 16, 0.01) == [3, 5]
    assert bank.select_memory_frames(5, 10, False, 16, 0.01) == [1, 3, 4]
    # Reverse from 0: scan 1, 2, ...; the adjacent frame 1 comes last.
    assert bank.select_memory_frames(0, 10, True, 16, 0.01) == [5, 3, 1]
    assert bank.select_memory_frames(0, 10, False, 16, 0.01) == []


def test_memory_attention_on_one_frame_broadcast_over_objects_is_the_plain_batch(tracker, tiny):
    """One frame's features expanded over B objects (batch stride 0) run the first self-attention once; the
    result is that of the same rows materialised, each object with its own memory (2 grids + 3 pointers)."""
    g, c, m = tiny.feature_size, tiny.d_model, tiny.tracker.mem_dim
    gen = torch.Generator().manual_seed(3)
    src = torch.randn(1, g * g, c, generator=gen).expand(4, -1, -1)
    src_pos = torch.randn(1, g * g, c, generator=gen).expand(4, -1, -1)
    memory = torch.randn(4, 2 * g * g + 3, m, generator=gen)
    memory_pos = torch.randn(4, 2 * g * g + 3, m, generator=gen)
    with torch.no_grad():
        shared = tracker.memory_attention(src, src_pos, memory, memory_pos, (g, g), 3)
        plain = tracker.memory_attention(src.contiguous(), src_pos.contiguous(), memory, memory_pos, (g, g), 3)
        alone = tracker.memory_attention(src[:1], src_pos[:1], memory[2:3], memory_pos[2:3], (g, g), 3)
    assert shared.shape == plain.shape == (4, g * g, c)
    torch.testing.assert_close(shared, plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(shared[2:3], alone, rtol=0, atol=1e-5)
    assert not torch.allclose(shared[0], shared[1])  # each object read its own memory


def test_memory_encoder_projects_one_broadcast_frame_once(tracker, tiny):
    g, c, s = tiny.feature_size, tiny.d_model, tiny.input_mask_size
    gen = torch.Generator().manual_seed(5)
    pix = torch.randn(1, c, g, g, generator=gen).expand(3, -1, -1, -1)
    mask = torch.randn(3, 1, s, s, generator=gen) * 10
    with torch.no_grad():
        shared, pos = tracker.maskmem_backbone(pix, mask)
        plain, plain_pos = tracker.maskmem_backbone(pix.contiguous(), mask)
    assert shared.shape == plain.shape == (3, tiny.tracker.mem_dim, g, g)
    torch.testing.assert_close(shared, plain, rtol=0, atol=1e-5)
    assert torch.equal(pos, plain_pos)
