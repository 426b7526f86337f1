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
from sam3.inference.runtime import inference_context, prepare_model, warm_up
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
    assert report.compiled == ("detector.backbone.vision_backbone.trunk",)
    x = torch.randn(1, 3, tiny_model.config.image_size, tiny_model.config.image_size)
    with torch.inference_mode():
        plain = tiny_model.encode_image(x)
        compiled = model.encode_image(x)
    for a, b in zip(plain.fpn, compiled.fpn):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
