"""The precision policy (sam3.device.resolve_precision) on every (mode, device, CPU) combination; host-device
transfers (upload, download).

The policy is a pure function of its inputs; devices this machine lacks are passed as torch.device
values (nothing runs on them), and CPUs as CpuInfo values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam3.device import CpuInfo, cpu_info, resolve_device, resolve_precision

AVX2 = CpuInfo("AVX2", avx512_bf16=False, amx_bf16=False)
AVX512_BF16 = CpuInfo("AVX512", avx512_bf16=True, amx_bf16=False)
AMX = CpuInfo("AVX512", avx512_bf16=False, amx_bf16=True)
CUDA, MPS, CPU = torch.device("cuda"), torch.device("mps"), torch.device("cpu")


@pytest.mark.parametrize(
    "requested, device, cpu, mode, dtype, tf32",
    [
        ("auto", CUDA, None, "bf16", torch.bfloat16, True),
        ("auto", MPS, None, "fp32", None, False),
        ("auto", CPU, AVX2, "fp32", None, False),
        ("auto", CPU, AVX512_BF16, "bf16", torch.bfloat16, False),
        ("auto", CPU, AMX, "bf16", torch.bfloat16, False),
        (None, CPU, AVX2, "fp32", None, False),
        ("fp32", CUDA, None, "fp32", None, False),
        ("fp32", CPU, AMX, "fp32", None, False),
        ("bf16", CPU, AVX2, "bf16", torch.bfloat16, False),
        ("fp16", CUDA, None, "fp16", torch.float16, True),
        ("BF16", CUDA, None, "bf16", torch.bfloat16, True),
        ("int8", CPU, AVX2, "int8", None, False),
    ],
)
def test_policy(requested, device, cpu, mode, dtype, tf32):
    p = resolve_precision(requested, device, cpu=cpu)
    assert (p.mode, p.autocast_dtype, p.tf32, p.device) == (mode, dtype, tf32, device)
    assert p.quantize_int8 == (mode == "int8") and p.is_exact == (mode == "fp32") and p.reason


def test_emulated_bf16_is_said_in_the_reason():
    assert "emulated" in resolve_precision("bf16", CPU, cpu=AVX2).reason
    assert "no native bf16" in resolve_precision("auto", CPU, cpu=AVX2).reason


@pytest.mark.parametrize(
    "requested, device, match",
    [
        ("int8", CUDA, "CPU only"),
        ("int8", MPS, "CPU only"),
        ("bf16", MPS, "not supported on MPS"),
        ("fp16", MPS, "not supported on MPS"),
        ("int4", CPU, "precision must be one of"),
    ],
)
def test_refusals_say_why(requested, device, match):
    with pytest.raises(ValueError, match=match):
        resolve_precision(requested, device, cpu=AVX2)


def test_this_machine_is_probed():
    info = cpu_info()
    assert info.capability == torch.backends.cpu.get_cpu_capability()
    assert info.describe().startswith(info.capability)


def test_context_is_scoped_not_global():
    """Autocast is on inside the context only; fp32 enters nothing at all."""
    bf16 = resolve_precision("bf16", CPU, cpu=AVX2)
    a, b = torch.randn(4, 8), torch.randn(8, 4)
    with bf16.context():
        assert torch.is_autocast_enabled("cpu") and (a @ b).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu") and (a @ b).dtype == torch.float32
    with resolve_precision("fp32", CPU).context():
        assert not torch.is_autocast_enabled("cpu")


def test_resolve_device_reads_no_environment(monkeypatch):
    monkeypatch.setenv("SAM3_DEVICE", "cuda:7")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("cpu") == CPU


@pytest.mark.parametrize("stated, native", [("native", True), ("emulated", False)])
def test_a_stated_cpu_replaces_the_probe(stated, native):
    info = cpu_info(stated)
    assert info.native_bf16 is native and info.stated
    assert info.capability == str(torch.backends.cpu.get_cpu_capability())
    assert resolve_precision("auto", CPU, cpu=info).mode == ("bf16" if native else "fp32")
    assert f"bf16 {stated} as stated" in info.describe()
    with pytest.raises(ValueError, match="cpu bf16 must be one of"):
        cpu_info("avx512")


def test_autocast_in_effect_is_read_per_device():
    from sam3.device import autocast_dtype_in_effect

    assert autocast_dtype_in_effect(CPU) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_dtype_in_effect(CPU) is torch.bfloat16
        assert autocast_dtype_in_effect("meta") is None
    assert autocast_dtype_in_effect(CPU) is None


def test_upload_gives_the_values_on_the_device_and_keeps_a_tensor_already_there():
    from sam3.device import pins_host_memory, upload

    cpu = torch.device("cpu")
    assert not pins_host_memory(cpu) and pins_host_memory("cuda:0")
    t = torch.arange(6).view(2, 3)
    assert upload(t, cpu) is t  # already there: no copy
    assert upload(t, cpu, torch.float32).dtype == torch.float32
    torch.testing.assert_close(
        upload([[1, 2], [3, 4]], cpu, torch.int32), torch.tensor([[1, 2], [3, 4]], dtype=torch.int32)
    )
    assert upload(np.array([0.5, 1.5]), cpu).dtype == torch.float64  # an array keeps its dtype


def test_to_host_leaves_a_cpu_tensor_where_it_is():
    from sam3.device import to_host

    t = torch.arange(4)
    assert to_host(t) is t


@pytest.mark.parametrize("pack", [None, True])
def test_download_packs_tensors_of_any_dtype_and_shape_into_one_transfer(pack):
    """One host buffer split back into each tensor's dtype and shape (the accelerator path, forced on the CPU with
    ``pack=True``), and the same arrays as ``Tensor.numpy`` unpacked."""
    from sam3.device import download

    torch.manual_seed(0)
    tensors = [
        torch.rand(3, 5, 7) > 0.5,
        torch.randn(3),
        torch.randn(2, 4, 4).transpose(1, 2),  # not contiguous
        torch.arange(5, dtype=torch.int64),
        torch.randn(4).half(),
        torch.empty(0, 3),
        torch.tensor(2.5),
    ]
    arrays = download(*tensors, pack=pack)
    assert len(arrays) == len(tensors)
    for t, a in zip(tensors, arrays):
        assert a.dtype == t.numpy().dtype and a.shape == tuple(t.shape)
        np.testing.assert_array_equal(a, t.numpy())
