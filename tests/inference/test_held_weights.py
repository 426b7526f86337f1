"""Weights held in the autocast dtype (sam3.inference.held_weights) against autocast's own per-call casts.

Every path the service serves (encode, text prompt, click, and video tracking of several clicked objects with a
text-detected one) runs on the same tiny model under bf16 autocast, first plain, then with the weights held:
every output, and every output of the tracker's mask decoder and memory encoder on the way, must be bit for bit
equal, with no weight cast left. The fp32 path of a held model is the fp32 path of the plain model, and release
gives the plain modules back.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from sam3.device import resolve_precision
from sam3.inference.association import TrackingHeuristics
from sam3.inference.held_weights import HeldWeights
from sam3.inference.processor import Sam3Processor
from sam3.inference.runtime import prepare_model
from sam3.inference.video_predictor import VideoPredictor
from tests.dev_model import dev_model

CPU = torch.device("cpu")
BF16 = resolve_precision("bf16", CPU)
FP32 = resolve_precision("fp32", CPU)
HW = (96, 128)
HEURISTICS = TrackingHeuristics(score_threshold_detection=0.2, new_det_thresh=0.2, det_nms_thresh=0.5, hotstart_delay=0)
CASTS = (torch.ops.aten.to, torch.ops.aten._to_copy)
CLICKS = {1: [[30, 30]], 2: [[90, 40]], 3: [[60, 70]]}


class WeightCasts(TorchDispatchMode):
    """Counts dtype casts (``to``, ``_to_copy``: what autocast calls) per parameter of ``model`` cast."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.names = {p.data_ptr(): name for name, p in model.named_parameters()}
        self.count: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in CASTS and args[0].data_ptr() in self.names:
            self.count[self.names[args[0].data_ptr()]] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def frames(tmp_path_factory, coffee):
    path = tmp_path_factory.mktemp("held_frames")
    base = np.asarray(Image.fromarray(coffee).resize((HW[1] * 2, HW[0])))
    for i in range(4):
        Image.fromarray(np.ascontiguousarray(base[:, 8 * i : 8 * i + HW[1]])).save(path / f"{i:05d}.jpg", quality=95)
    return path


def run_every_path(model, image: np.ndarray, frames) -> list[torch.Tensor]:
    """Every output of encode + text + click, then of a tracked video, and the tracker's inner outputs."""
    seen: list[torch.Tensor] = []

    def record(_module, _args, out):
        seen.extend(t.detach().clone() for t in torch.utils._pytree.tree_flatten(out)[0] if torch.is_tensor(t))

    hooks = [model.tracker.sam_mask_decoder.register_forward_hook(record),
             model.tracker.maskmem_backbone.register_forward_hook(record)]  # fmt: skip
    try:
        processor = Sam3Processor(model, feature_cache_bytes=0, text_cache_entries=0)
        state = processor.set_text_prompt("a cup", processor.set_image(image))
        outs = [state.masks_logits, state.boxes, state.scores]
        outs += [torch.from_numpy(a) for a in processor.predict_inst(state, point_coords=[[60, 50]], point_labels=[1])]
        predictor = VideoPredictor(model, HEURISTICS)
        session = predictor.start_session(str(frames))
        predictor.add_prompt(session, 0, text="a cup")
        for obj_id, points in CLICKS.items():
            predictor.add_prompt(session, 0, points=points, labels=[1], obj_id=obj_id)
        for result in predictor.propagate(session, "forward"):
            outs += [torch.from_numpy(result.masks), torch.from_numpy(result.boxes_xyxy)]
        predictor.close_session(session)
    finally:
        for hook in hooks:
            hook.remove()
    return outs + seen


def test_held_weights_give_autocasts_results_bit_for_bit_without_weight_casts(coffee, frames):
    model = dev_model()
    image = np.asarray(Image.fromarray(coffee).resize((160, 120)))
    with BF16.context(), WeightCasts(model) as plain_casts:
        plain = run_every_path(model, image, frames)
    with FP32.context():
        plain_fp32 = run_every_path(model, image, frames)

    report = prepare_model(model, BF16)
    assert len(report.held) > 50 and "tracker.sam_mask_decoder.output_upscaling.0" in report.held
    assert "detector.transformer.decoder.layers.0.self_attn" in report.held  # packed q/k/v projections
    with BF16.context(), WeightCasts(model) as held_casts:
        held = run_every_path(model, image, frames)
    assert len(held) == len(plain) > 20
    assert all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(plain, held))
    assert plain_casts.count.total() > 1000
    # left: an embedding table read directly into a projection (held are linear and convolution layers only)
    assert held_casts.count == {"detector.geometry_encoder.cls_embed.weight": 2}

    with FP32.context():
        held_fp32 = run_every_path(model, image, frames)
    assert all(torch.equal(a, b) for a, b in zip(plain_fp32, held_fp32))
    # outside a held forward the modules show their fp32 parameters (code that reads a weight directly sees them)
    assert Counter(p.dtype for p in model.parameters()) == Counter({torch.float32: len(list(model.parameters()))})


def test_release_gives_the_plain_modules_back_and_holding_twice_holds_nothing():
    model = dev_model()
    held = HeldWeights(model, torch.bfloat16)
    count = len(held)
    assert count > 50 and len(HeldWeights(model, torch.bfloat16)) == 0  # each module is held once
    held.release()
    assert not any("forward" in m.__dict__ for m in model.modules())
    again = HeldWeights(model, torch.float16)
    assert len(again) == count
    again.release()
    with pytest.raises(ValueError, match="bf16 or fp16"):
        HeldWeights(model, torch.float32)


def test_fp32_and_int8_hold_nothing():
    assert prepare_model(dev_model(), FP32).held == ()
    assert prepare_model(dev_model(), resolve_precision("int8", CPU)).held == ()
