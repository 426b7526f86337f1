"""bench/int8_floor.py emulates int8 linears in fp32. Its figures mean something only if the emulation rounds as
torch's int8 kernels do: checked here against ``sam3.quantize.quantize_linear_int8`` on one layer."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from sam3.quantize import quantize_linear_int8

BENCH = Path(__file__).resolve().parents[2] / "bench" / "int8_floor.py"


@pytest.fixture(scope="module")
def floor():
    spec = importlib.util.spec_from_file_location("int8_floor", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _layer_and_input() -> tuple[nn.Linear, torch.Tensor]:
    torch.manual_seed(0)
    layer = nn.Linear(512, 384).eval()
    nn.init.trunc_normal_(layer.weight, std=0.02)
    return layer, torch.randn(2, 40, 512) * 1.5 + 0.3


@torch.inference_mode()
def test_weight_rounding_is_torch_per_channel_int8(floor):
    layer, _ = _layer_and_input()
    packed = nn.Sequential(copy.deepcopy(layer))
    assert quantize_linear_int8(packed, min_weights=0) == ["0"]
    torch.testing.assert_close(floor.round_weights(layer.weight), packed[0].weight().dequantize(), rtol=0, atol=0)


@torch.inference_mode()
def test_seven_bit_emulation_matches_the_int8_mode_kernel(floor):
    layer, x = _layer_and_input()
    real = nn.Sequential(copy.deepcopy(layer))
    quantize_linear_int8(real, min_weights=0)
    emulated = nn.Sequential(copy.deepcopy(layer))
    with torch.no_grad():
        emulated[0].weight.copy_(floor.round_weights(emulated[0].weight))
    rounding = floor.act_per_tensor(reduce_range=True)
    y_emulated = emulated(rounding(x))
    y_real, y_fp32 = real(x), layer(x)
    # Same integers, summed exactly by the kernel and in fp32 here: only fp32 round-off apart ...
    assert float((y_emulated - y_real).abs().max()) < 1e-4 * float(y_real.abs().max())
    # ... while int8 itself moves the output by about a percent, so the check above can tell them apart.
    assert float((y_fp32 - y_real).norm() / y_fp32.norm()) > 5e-3
