"""Getting a model ready to serve (sam3.inference.runtime): int8 quantisation, compile, warm-up, threads.

Each fast path is compared with the plain fp32 path on the same tiny model; the quality bound for the
reduced precisions is in tests/parity/test_precision_quality.py.
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from sam3.build import build_image_model
from sam3.device import resolve_precision
from sam3.inference.processor import Sam3Processor
from sam3.inference.runtime import (
    frame_step_modules,
    inference_context,
    object_buckets,
    prepare_model,
    warm_up,
    warm_up_video,
)
from sam3.inference.video_predictor import VideoPredictor
from sam3.quantize import is_quantized

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_image_model(preset="tiny", random_weights=True, device="cpu", load_from_HF=False).eval()


def test_fp32_prepares_nothing(tiny_model):
    model = copy.deepcopy(tiny_model)
    report = prepare_model(model, resolve_precision("fp32", CPU))
    assert report.quantized == () and report.compiled == ()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), tiny_model.state_dict().values()))


def test_int8_quantises_the_large_linears_and_stays_close(tiny_model, astronaut):
    model = copy.deepcopy(tiny_model)
    report = prepare_model(model, resolve_precision("int8", CPU))
    assert is_quantized(model) and not is_quantized(tiny_model)
    assert report.quantized and all(n.startswith("detector.backbone.vision_backbone.trunk.") for n in report.quantized)
    assert any(n.endswith("mlp.fc1") for n in report.quantized)
    plain, quant = Sam3Processor(tiny_model), Sam3Processor(model)
    a = plain.predict_inst(plain.set_image(astronaut), point_coords=[[250, 200]], point_labels=[1])
    b = quant.predict_inst(quant.set_image(astronaut), point_coords=[[250, 200]], point_labels=[1])
    assert a[0].shape == b[0].shape and np.abs(a[1] - b[1]).max() < 0.1


def test_int8_engine_is_chosen_at_packing_and_the_global_engine_is_left_alone():
    from torch import nn

    from sam3.quantize import preferred_engine, quantize_linear_int8

    torch.manual_seed(0)
    x, before = torch.randn(64, 256), torch.backends.quantized.engine
    for engine in sorted({preferred_engine(), before}):
        layer = nn.Sequential(nn.Linear(256, 512))
        torch.manual_seed(1)
        layer[0].reset_parameters()
        reference = layer(x)
        assert quantize_linear_int8(layer, min_weights=0, engine=engine) == ["0"]
        assert torch.backends.quantized.engine == before
        with torch.inference_mode():
            out = layer(x)
        assert (out - reference).norm() / reference.norm() < 0.05
    if "onednn" in torch.backends.quantized.supported_engines:
        assert preferred_engine() == "onednn"


def test_warm_up_runs_every_image_path_and_leaves_no_state(tiny_model):
    seconds = warm_up(tiny_model, resolve_precision("fp32", CPU))
    assert seconds > 0


def test_thread_count_is_set_in_the_calling_thread():
    before, seen = torch.get_num_threads(), []

    def worker():
        with inference_context(resolve_precision("fp32", CPU), num_threads=1):
            seen.append(torch.get_num_threads())

    try:
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert seen == [1]
    finally:
        torch.set_num_threads(before)


@pytest.mark.full  # inductor on 2 shared CPU cores: 3-4 minutes to compile even the tiny trunk
def test_compiled_trunk_matches_the_plain_path(tiny_model):
    """SAM3_COMPILE: the compiled vision trunk gives the plain trunk's features (one input, tiny preset)."""
    model = copy.deepcopy(tiny_model)
    report = prepare_model(model, resolve_precision("fp32", CPU), compile=True)
    assert report.compiled == ("detector.backbone.vision_backbone.trunk", *frame_step_modules(model))
    x = torch.randn(1, 3, tiny_model.config.image_size, tiny_model.config.image_size)
    with torch.inference_mode():
        plain = tiny_model.encode_image(x)
        compiled = model.encode_image(x)
    for a, b in zip(plain.fpn, compiled.fpn):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_object_buckets_are_the_padded_counts():
    assert object_buckets(0) == []
    assert object_buckets(1) == [1]
    assert object_buckets(5) == [1, 2, 4, 8]
    assert object_buckets(16) == [1, 2, 4, 8, 16]


@pytest.mark.parametrize("version", ["sam3", "sam3.1"])
def test_frame_step_is_every_trackers_memory_attention_heads_and_memory_encoder(version):
    from sam3.registry import build_model

    model = build_model(version, preset="tiny", random_weights=True, device="cpu", load_from_HF=False)
    found = frame_step_modules(model)
    tracker = "tracker." if version == "sam3" else "tracker.model."
    assert set(found) == {tracker + n for n in ("transformer.encoder", "sam_mask_decoder", "maskmem_backbone")} | (
        {tracker + "sam_prompt_encoder"} if version == "sam3" else set()
    )
    assert found[tracker + "maskmem_backbone"] is False  # one static graph per object bucket
    assert found[tracker + "transformer.encoder"] is None  # the memory grows: dynamic on its second shape


def _track(model, video: str, objects: int) -> list:
    """Clicks on frame 0 for ``objects`` objects, then a forward propagation: every frame's result."""
    predictor = VideoPredictor(model, bucket_objects=True)
    session = predictor.start_session(video)
    h, w = session.video_hw
    out = [
        predictor.add_prompt(session, 0, points=[[(k + 0.5) * w / objects, h / 2]], labels=[1], obj_id=k + 1)
        for k in range(objects)
    ]
    out += list(predictor.propagate(session, direction="forward"))
    predictor.close_session(session)
    return out


@pytest.mark.full  # inductor: about a minute to compile the frame step's graphs on 2 CPU cores
def test_compiled_frame_step_after_the_video_warm_up_compiles_nothing_and_matches_the_plain_path(repo_root):
    """SAM3_COMPILE + SAM3_WARMUP: after the warm-up over the object buckets, tracking 1 or 3 objects (buckets
    1 and 4) compiles no new graph, and its masks are the plain path's but for fp32 round-off at their edges."""
    from torch._dynamo.utils import counters

    from sam3.build import build_video_model
    from sam3.dev_weights import make_visible

    torch.manual_seed(0)
    plain = build_video_model(preset="tiny", random_weights=True, device="cpu", load_from_HF=False).eval()
    make_visible(plain)  # objects that show up, so the masks compared are not empty
    model = copy.deepcopy(plain)
    fp32 = resolve_precision("fp32", CPU)
    report = prepare_model(model, fp32, compile=True)
    assert set(frame_step_modules(model)) <= set(report.compiled)
    assert warm_up(model, fp32) > 0 and warm_up_video(model, fp32, max_objects=4) > 0
    graphs = counters["stats"]["unique_graphs"]
    video = str(repo_root / "tests" / "data" / "video_0001")
    for objects in (1, 3):
        compiled, reference = _track(model, video, objects), _track(plain, video, objects)
        assert counters["stats"]["unique_graphs"] == graphs, f"{objects} objects compiled a graph after the warm-up"
        assert [r.frame_idx for r in compiled] == [r.frame_idx for r in reference]
        for a, b in zip(compiled, reference):
            np.testing.assert_array_equal(a.obj_ids, b.obj_ids)
            for x, y in zip(a.masks, b.masks):
                # fp32 round-off (other kernels, folded constants) flips a few pixels at the mask's edge at most
                assert (x ^ y).sum() <= max(8, 1e-3 * (x | y).sum()), (a.frame_idx, int((x ^ y).sum()), int(x.sum()))
