"""Sam3Processor on the tiny preset with random weights and real photos: input kinds, thresholds, caches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sam3.build import build_image_model
from sam3.inference.processor import ImageBatchState, ImageState, Sam3Processor
from sam3.inference.transforms import preprocess, to_uint8_chw


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_image_model(preset="tiny", random_weights=True, device="cpu")


def _assert_same_results(a: ImageState, b: ImageState, atol: float = 0.0):
    assert a.scores.shape == b.scores.shape
    torch.testing.assert_close(a.scores, b.scores, atol=atol, rtol=0)
    torch.testing.assert_close(a.boxes, b.boxes, atol=atol * 1000, rtol=0)
    torch.testing.assert_close(a.masks_logits, b.masks_logits, atol=atol, rtol=0)


def test_text_prompt_results(model, coffee):
    proc = Sam3Processor(model, confidence_threshold=0.0)
    state = proc.set_image(coffee)
    assert (state.original_height, state.original_width) == (400, 600)
    assert "boxes" not in state and state.get("masks") is None
    with pytest.raises(KeyError):
        state["scores"]
    state = proc.set_text_prompt("a cup of coffee", state)
    q = model.config.decoder.num_queries
    assert state["masks"].shape == (q, 1, 400, 600) and state["masks"].dtype == torch.bool
    assert state["masks_logits"].shape == (q, 1, 400, 600) and state.mask_probs is state.masks_logits
    assert 0.0 <= float(state.masks_logits.min()) and float(state.masks_logits.max()) <= 1.0
    assert torch.equal(state.masks, state.masks_logits > 0.5)
    assert state.masks_hw.shape == (q, 400, 600)
    assert state["boxes"].shape == (q, 4) and state["scores"].shape == (q,)
    assert state["original_height"] == 400 and state["original_width"] == 600


def test_pil_numpy_tensor_inputs_agree(model, astronaut):
    proc = Sam3Processor(model, confidence_threshold=0.0, feature_cache_bytes=0)  # no cache: three real passes
    inputs = [Image.fromarray(astronaut), astronaut, torch.from_numpy(astronaut).permute(2, 0, 1).contiguous()]
    states = [proc.set_text_prompt("a person", proc.set_image(x)) for x in inputs]
    assert proc.backbone_runs == 3
    for other in states[1:]:
        _assert_same_results(states[0], other)


def test_numpy_hwc_is_read_as_hwc(coffee):
    assert to_uint8_chw(coffee).shape == (3, 400, 600)
    assert to_uint8_chw(Image.fromarray(coffee).convert("L")).shape == (3, 400, 600)
    assert to_uint8_chw(coffee.astype(np.float32) / 255).shape == (3, 400, 600)
    with pytest.raises(ValueError, match="channels-first"):
        to_uint8_chw(torch.from_numpy(coffee))  # an HWC tensor is refused, not misread


def test_read_only_numpy_image_is_copied_not_shared(coffee, recwarn):
    frozen = np.asarray(Image.fromarray(coffee))  # what np.asarray gives for a PIL image: read-only
    assert not frozen.flags.writeable
    chw = to_uint8_chw(frozen)
    assert torch.equal(chw, torch.from_numpy(coffee.copy()).permute(2, 0, 1))
    assert not np.shares_memory(chw.numpy(), frozen)
    assert not [w for w in recwarn if "not writable" in str(w.message)]


def test_preprocess_matches_torchvision_pipeline(astronaut):
    from torchvision.transforms import v2

    official = v2.Compose(
        [
            v2.ToDtype(torch.uint8, scale=True),
            v2.Resize(size=(224, 224)),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.5] * 3, std=[0.5] * 3),
        ]
    )
    expected = official(v2.functional.to_image(Image.fromarray(astronaut))).unsqueeze(0)
    assert torch.equal(preprocess(to_uint8_chw(astronaut), 224), expected)


def test_threshold_refilters_without_rerunning_the_detector(model, coffee):
    proc = Sam3Processor(model, confidence_threshold=0.0)
    state = proc.set_text_prompt("a cup", proc.set_image(coffee))
    all_scores = state.scores.clone()
    runs = proc.detector_runs
    threshold = float(all_scores.median())
    proc.set_confidence_threshold(threshold, state)
    assert proc.detector_runs == runs
    assert torch.equal(state.scores, all_scores[all_scores > threshold])
    assert 0 < state.scores.numel() < all_scores.numel()
    assert state.masks.shape[0] == state.boxes.shape[0] == state.scores.numel()

    fresh = Sam3Processor(model, confidence_threshold=threshold)
    _assert_same_results(state, fresh.set_text_prompt("a cup", fresh.set_image(coffee)))

    proc.set_confidence_threshold(1.1, state)  # nothing passes: empty, well-shaped results
    assert state.masks.shape == (0, 1, 400, 600) and state.boxes.shape == (0, 4) and state.scores.shape == (0,)


def test_image_and_text_caches(model, coffee, astronaut):
    proc = Sam3Processor(model)
    s1 = proc.set_image(coffee)
    s2 = proc.set_image(Image.fromarray(coffee))  # same pixels, another container: a cache hit
    assert proc.backbone_runs == 1 and s1.image_key == s2.image_key
    proc.set_image(astronaut)
    stats = proc.cache_stats()
    assert (stats["image_hits"], stats["image_misses"], stats["image_entries"]) == (1, 2, 2)
    assert stats["backbone_runs"] == 2 and stats["image_bytes"] > 0

    proc.set_text_prompt("a cup", s1)
    proc.set_text_prompt("a cup", s2)
    proc.set_text_prompt("a mug", s2)
    stats = proc.cache_stats()
    assert (stats["text_hits"], stats["text_misses"], stats["text_runs"]) == (1, 2, 2)


def test_image_cache_is_bounded_in_bytes(model, coffee, astronaut):
    one = Sam3Processor(model)
    one.set_image(coffee)
    entry = one.cache_stats()["image_bytes"]
    proc = Sam3Processor(model, feature_cache_bytes=entry + entry // 2)  # room for one image only
    proc.set_image(coffee)
    proc.set_image(astronaut)  # evicts coffee
    proc.set_image(coffee)
    stats = proc.cache_stats()
    assert stats["image_entries"] == 1 and stats["image_bytes"] <= stats["image_capacity_bytes"]
    assert (stats["image_hits"], stats["image_misses"], stats["backbone_runs"]) == (0, 3, 3)


def test_lazy_necks_match_the_eager_processor_bit_for_bit(model, coffee):
    """The switch: necks made on first use give exactly what set_image-made necks give."""
    lazy, eager = Sam3Processor(model, confidence_threshold=0.0), Sam3Processor(model, lazy_necks=False)
    eager.set_confidence_threshold(0.0)
    ls, es = lazy.set_image(coffee), eager.set_image(coffee)
    assert ls.cached.features is None and ls.cached.sam is None and ls.cached.trunk is not None
    assert es.cached.features is not None and es.cached.sam is not None and es.cached.trunk is None
    click = dict(point_coords=[[300, 200]], point_labels=[1])
    for a, b in zip(lazy.predict_inst(ls, **click), eager.predict_inst(es, **click)):
        assert np.array_equal(a, b)
    assert ls.cached.sam is not None and ls.cached.features is None  # a click makes the tracker neck only
    _assert_same_results(lazy.set_text_prompt("a cup", ls), eager.set_text_prompt("a cup", es))
    assert ls.cached.trunk is None  # both necks made: the trunk map is let go
    assert lazy.backbone_runs == eager.backbone_runs == 1


def test_cache_evicts_when_a_lazy_entry_grows(model, coffee, astronaut):
    probe = Sam3Processor(model, feature_cache_bytes=0)
    state = probe.set_image(astronaut)
    trunk_only = state.cached.nbytes()
    grown = probe.set_text_prompt("a cup", state).cached.nbytes()  # trunk map + detector levels
    assert grown > 2 * trunk_only
    proc = Sam3Processor(model, feature_cache_bytes=grown + trunk_only // 2)  # room for one grown entry
    first, second = proc.set_image(coffee), proc.set_image(astronaut)
    assert proc.cache_stats()["image_entries"] == 2
    proc.set_text_prompt("a cup", second)  # the detector levels outgrow the room left: coffee goes
    stats = proc.cache_stats()
    assert stats["image_entries"] == 1 and stats["image_bytes"] == second.cached.nbytes()
    assert proc.restore_image(first.image_key) is None and proc.restore_image(second.image_key) is not None


def test_box_prompt_uses_visual_text_and_reset(model, coffee):
    proc = Sam3Processor(model, confidence_threshold=0.0)
    state = proc.set_image(coffee)
    state = proc.add_geometric_prompt([0.5, 0.5, 0.3, 0.4], True, state)
    assert state.text is not None and state.text_prompt is None and len(state.prompt_boxes) == 1
    assert proc.cache_stats()["text_misses"] == 1  # "visual"
    with_box = state.scores.clone()
    state = proc.add_geometric_prompt([0.2, 0.2, 0.1, 0.1], False, state)
    assert len(state.prompt_boxes) == 2 and not torch.equal(state.scores, with_box)
    with pytest.raises(ValueError, match="4 finite numbers"):
        proc.add_geometric_prompt([0.5, 0.5, 0.3], True, state)

    proc.reset_all_prompts(state)
    assert "boxes" not in state and state.text is None and state.prompt_boxes == []
    runs = proc.backbone_runs
    proc.set_text_prompt("a cup", state)  # the image features survive a reset
    assert proc.backbone_runs == runs and "masks" in state


def test_predict_inst_uses_cached_features(model, coffee):
    proc = Sam3Processor(model)
    state = proc.set_image(coffee)
    runs = proc.backbone_runs
    masks, ious, low_res = proc.predict_inst(state, point_coords=[[300, 200]], point_labels=[1])
    g4 = model.config.low_res_mask_size
    assert masks.shape == (3, 400, 600) and ious.shape == (3,) and low_res.shape == (3, g4, g4)
    assert masks.dtype == np.float32 and set(np.unique(masks)) <= {0.0, 1.0}
    masks, ious, low_res = proc.predict_inst(
        state, box=[100, 100, 400, 300], multimask_output=False, mask_input=low_res[:1]
    )
    assert masks.shape == (1, 400, 600) and ious.shape == (1,)
    assert proc.backbone_runs == runs


def test_predict_inst_needs_a_tracker(coffee):
    model = build_image_model(preset="tiny", random_weights=True, device="cpu", enable_inst_interactivity=False)
    proc = Sam3Processor(model, confidence_threshold=0.0)
    state = proc.set_text_prompt("a cup", proc.set_image(coffee))  # the detector still works
    assert state.scores.numel() == model.config.decoder.num_queries
    with pytest.raises(RuntimeError, match="enable_inst_interactivity"):
        proc.predict_inst(state, point_coords=[[1, 1]], point_labels=[1])


def test_image_batch(model, coffee, astronaut):
    proc = Sam3Processor(model, confidence_threshold=0.0)
    batch = proc.set_image_batch([coffee, astronaut, coffee])
    assert isinstance(batch, ImageBatchState) and len(batch) == 3
    assert proc.backbone_runs == 2  # one batched pass over the two distinct images
    assert batch["original_heights"] == [400, 512, 400] and batch["original_widths"] == [600, 512, 600]
    proc.set_text_prompt("a cup", batch)

    single = Sam3Processor(model, confidence_threshold=0.0)
    for state, image in zip(batch, [coffee, astronaut, coffee]):
        # Batched and single convolutions may round differently in the last bits.
        _assert_same_results(state, single.set_text_prompt("a cup", single.set_image(image)), atol=1e-4)
    masks, _, _ = proc.predict_inst_batch(
        batch, [[[10, 10]], [[20, 20]], None], [[1], [1], None], box_batch=[None, None, [0, 0, 50, 50]]
    )
    assert [m.shape for m in masks] == [(3, 400, 600), (3, 512, 512), (3, 400, 600)]


def test_state_must_come_from_set_image(model):
    proc = Sam3Processor(model)
    with pytest.raises(ValueError, match="set_image"):
        proc.set_text_prompt("a cup", {})


def test_state_made_under_bf16_autocast_is_refused_outside_it_and_the_image_encodes_again(model, coffee):
    """The processor's state belongs to the precision it was made under (issue: a call outside the server's
    precision context on features the server made under bf16 autocast failed with a dtype mismatch)."""
    from sam3.inference.processor import PrecisionMismatch

    proc = Sam3Processor(model, confidence_threshold=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = proc.set_text_prompt("a cup", proc.set_image(coffee))
    assert proc.backbone_runs == 1 and bf16.scores.numel() > 0
    with pytest.raises(PrecisionMismatch, match="encoded under bf16 autocast but this call runs under fp32"):
        proc.set_text_prompt("a cup", bf16)
    with pytest.raises(PrecisionMismatch):
        proc.predict_inst(bf16, point_coords=[[300, 200]], point_labels=[1])
    with pytest.raises(PrecisionMismatch):
        proc.add_geometric_prompt([0.5, 0.5, 0.2, 0.2], True, bf16)
    # Outside autocast the same image is a new cache entry (fp32 features), equal to a fresh fp32 processor's.
    again = proc.set_text_prompt("a cup", proc.set_image(coffee))
    assert proc.backbone_runs == 2 and again.image_id == bf16.image_id
    reference = Sam3Processor(model, confidence_threshold=0.0)
    _assert_same_results(again, reference.set_text_prompt("a cup", reference.set_image(coffee)))
    # ... and an fp32 state is refused under autocast, while the bf16 entry is still served from the cache.
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(PrecisionMismatch, match="under bf16 autocast"):
        proc.set_text_prompt("a cup", again)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert proc.restore_image(bf16.image_id).cached is bf16.cached
    assert proc.backbone_runs == 2
