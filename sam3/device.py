"""The one place that names a device or chooses a precision policy.

Model code follows the device and dtype of its inputs and buffers; the builders, the predictors and
the server ask this module which device to use and which :class:`Precision` to run in. Nothing here
reads the environment or flips a global switch on import: the server passes its settings down, and the
precision is entered as a context around each inference call (:meth:`Precision.context`).

The policy (``resolve_precision``), for the requested mode ``auto | fp32 | bf16 | fp16 | int8``:

=========  ===================================  ======  ==========================================
requested  cuda                                 mps     cpu
=========  ===================================  ======  ==========================================
auto       bf16 autocast + TF32 (as released)   fp32    bf16 autocast with native bf16 (AMX or
                                                        AVX-512 BF16), else fp32
fp32       fp32, the exact reference path       fp32    fp32
bf16       bf16 autocast + TF32                 error   bf16 autocast (emulated without native bf16:
                                                        correct but several times slower)
fp16       fp16 autocast + TF32                 error   fp16 autocast (slow on most CPUs)
int8       error                                error   dynamic int8 quantisation of the large
                                                        ``nn.Linear`` layers (``sam3.quantize``)
=========  ===================================  ======  ==========================================

MPS stays fp32: the spec's MPS notes report bf16 breaking there and autocast on MPS is partial.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PRECISION_MODES = ("auto", "fp32", "bf16", "fp16", "int8")


def resolve_device(override: str | torch.device | None = None) -> torch.device:
    """Pick the compute device: an explicit override (``None``, ``""`` or ``"auto"``: cuda > mps > cpu).

    The caller passes its setting (the server's ``SAM3_DEVICE``); this function reads no environment.
    Raises ``ValueError`` when an override names a device this machine does not have.
    """
    if override is not None and str(override).strip().lower() not in ("", "auto"):
        device = torch.device(override)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(override)!r} requested but CUDA is not available")
        if device.type == "mps" and not mps_available():
            raise ValueError(f"device {str(override)!r} requested but MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def device_name(device: torch.device) -> str:
    """'cuda' | 'mps' | 'cpu' (no index), as the service's /health reports it."""
    return torch.device(device).type


# ---------------------------------------------------------------------------------------------- CPU


@dataclass(frozen=True)
class CpuInfo:
    """What the precision policy needs to know about the CPU.

    capability: torch's SIMD level for its own kernels (``torch.backends.cpu.get_cpu_capability()``:
    "DEFAULT", "AVX2", "AVX512", ...); it does not say whether bf16 is native, hence the two flags.
    """

    capability: str
    avx512_bf16: bool
    amx_bf16: bool
    stated: bool = False  # the bf16 flags were stated by a setting, not probed

    @property
    def native_bf16(self) -> bool:
        return self.avx512_bf16 or self.amx_bf16

    def describe(self) -> str:
        extras = [name for name, on in (("AVX512_BF16", self.avx512_bf16), ("AMX_BF16", self.amx_bf16)) if on]
        text = "+".join([self.capability, *extras])
        return f"{text} (bf16 {'native' if self.native_bf16 else 'emulated'} as stated)" if self.stated else text


CPU_BF16_MODES = ("auto", "native", "emulated")


def cpu_info(bf16: str = "auto") -> CpuInfo:
    """This machine's CPU: torch's capability string plus the bf16 flags (torch's probes, else /proc/cpuinfo).

    ``bf16``: "auto" probes the CPU; "native" / "emulated" state it instead (the service's ``SAM3_CPU_BF16``:
    an operator who wants ``auto`` to mean fp32 on a bf16 CPU, or a test suite that runs the policy both ways
    on any machine). A stated "native" marks the CPU as having AVX512_BF16 and no AMX.
    """
    if bf16 not in CPU_BF16_MODES:
        raise ValueError(f"cpu bf16 must be one of {', '.join(CPU_BF16_MODES)}; got {bf16!r}")
    capability = str(torch.backends.cpu.get_cpu_capability())
    if bf16 != "auto":
        return CpuInfo(capability, avx512_bf16=bf16 == "native", amx_bf16=False, stated=True)
    flags = _proc_cpuinfo_flags()
    avx512_bf16 = _probe("_is_avx512_bf16_supported") or "avx512_bf16" in flags
    amx_bf16 = _probe("_is_amx_tile_supported") or "amx_bf16" in flags
    return CpuInfo(capability, avx512_bf16, amx_bf16)


def _probe(name: str) -> bool:
    fn = getattr(torch.cpu, name, None)
    try:
        return bool(fn()) if fn is not None else False
    except Exception:  # a probe that fails on an exotic platform means "not known to be there"
        return False


def _proc_cpuinfo_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


# ---------------------------------------------------------------------------------------- precision


@dataclass(frozen=True)
class Precision:
    """The resolved precision of one device: what ``auto`` (or an explicit mode) became, and how.

    mode:            "fp32" | "bf16" | "fp16" | "int8" (never "auto"), as ``/health`` reports it
    requested:       the setting it was resolved from
    device:          the device it applies to
    autocast_dtype:  bf16 / fp16 for autocast modes, else None (int8 computes its quantised linears
                     in int8 and everything else in fp32)
    tf32:            let fp32 matmuls on CUDA use TF32 inside :meth:`context` (what stays fp32 under
                     autocast), as the official release does
    quantize_int8:   the builder's caller must quantise the model (``sam3.quantize.quantize_linear_int8``)
    reason:          one line on why (logged at start-up)
    """

    mode: str
    requested: str
    device: torch.device
    autocast_dtype: torch.dtype | None = None
    tf32: bool = False
    quantize_int8: bool = False
    reason: str = ""

    @property
    def is_exact(self) -> bool:
        """True for the fp32 reference path (bit-for-bit the plain model)."""
        return self.mode == "fp32"

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """Enter around one inference call: autocast (and TF32 on CUDA); nothing at all for fp32 / int8."""
        with contextlib.ExitStack() as stack:
            if self.tf32 and self.device.type == "cuda":
                stack.enter_context(_tf32_matmuls())
            if self.autocast_dtype is not None:
                stack.enter_context(torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype))
            yield


def resolve_precision(requested: str | None, device: torch.device | str, cpu: CpuInfo | None = None) -> Precision:
    """The precision policy: (requested mode, device, CPU) -> :class:`Precision`.

    ``cpu`` defaults to this machine's :func:`cpu_info` (tests pass their own). Raises ``ValueError``
    with the reason for a mode the device cannot run (int8 off the CPU, reduced precision on MPS) and
    for an unknown mode.
    """
    want = (requested or "auto").strip().lower()
    if want not in PRECISION_MODES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_MODES)}; got {requested!r}")
    device = torch.device(device)
    kind = device.type
    make = lambda mode, reason, **kw: Precision(mode, want, device, reason=reason, **kw)  # noqa: E731
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}

    if want == "fp32":
        return make("fp32", "requested: fp32 everywhere (the reference path)")
    if want == "int8":
        if kind != "cpu":
            raise ValueError(
                f"precision int8 (dynamic int8 quantisation of the linear layers) runs on the CPU only, "
                f"not on {kind}; use auto, bf16 or fp16 there"
            )
        return make("int8", "requested: int8 dynamic quantisation of the large linear layers", quantize_int8=True)
    if kind == "mps":
        if want == "auto":
            return make("fp32", "auto on MPS: fp32 (bf16 breaks there, autocast on MPS is partial)")
        raise ValueError(f"precision {want} is not supported on MPS (it runs fp32); use auto or fp32")
    if kind == "cuda":
        mode = "bf16" if want == "auto" else want
        why = "auto on CUDA: bf16 autocast + TF32, as the official release" if want == "auto" else f"requested: {mode}"
        return make(mode, why, autocast_dtype=half[mode], tf32=True)
    if kind != "cpu":
        if want == "auto":
            return make("fp32", f"auto on {kind}: fp32")
        raise ValueError(f"precision {want} is not supported on {kind}; use auto or fp32")

    cpu = cpu if cpu is not None else cpu_info()
    if want == "auto":
        if cpu.native_bf16:
            return make("bf16", f"auto on CPU {cpu.describe()}: native bf16, bf16 autocast",
                        autocast_dtype=torch.bfloat16)  # fmt: skip
        return make("fp32", f"auto on CPU {cpu.describe()}: no native bf16 (bf16 would be emulated, ~8x slower), fp32")
    note = "" if want == "fp16" or cpu.native_bf16 else " (emulated on this CPU: correct but slow)"
    return make(want, f"requested: {want} autocast on CPU {cpu.describe()}{note}", autocast_dtype=half[want])


class PrecisionMismatch(ValueError):
    """State made under one precision (an image's features, a video session's memories) used by a call made
    under another: raised by the predictors instead of a dtype error deep inside the model."""


def autocast_dtype_in_effect(device: torch.device | str) -> torch.dtype | None:
    """The dtype autocast computes in on ``device`` right now, or None outside autocast (plain fp32).

    State made under one precision (cached image features, say) is only valid in calls made under the same
    one; the predictors compare this value at creation and at use.
    """
    kind = torch.device(device).type
    if not torch.amp.is_autocast_available(kind) or not torch.is_autocast_enabled(kind):
        return None
    return torch.get_autocast_dtype(kind)


def describe_compute(dtype: torch.dtype | None) -> str:
    """'fp32 (no autocast)' | 'bf16 autocast' | 'fp16 autocast', for error messages."""
    if dtype is None:
        return "fp32 (no autocast)"
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype)) + " autocast"


@contextlib.contextmanager
def _tf32_matmuls() -> Iterator[None]:
    """TF32 for fp32 CUDA matmuls for the duration of one call, restored afterwards (not a global switch)."""
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    matmul.fp32_precision = "tf32"
    try:
        yield
    finally:
        matmul.fp32_precision = before


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (for benchmarks)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def empty_cache(device: torch.device) -> None:
    """Return cached allocator blocks to the driver (after closing a video session)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def upload(values, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Host values (a CPU tensor, an array or a list) -> a tensor on ``device`` without waiting for the device.

    A plain ``.to(device)`` or ``torch.tensor(..., device=...)`` copy to a CUDA device synchronises its stream (the
    host waits until every queued kernel has run): inside a frame loop that stalls the pipeline as a read does. On
    CUDA the values go through pinned memory with a non-blocking copy (torch's pinned allocator keeps the buffer
    until the copy has run); elsewhere it is a plain copy. A tensor already on ``device`` is returned as it is.
    """
    device = torch.device(device)
    host = values if isinstance(values, torch.Tensor) else torch.as_tensor(values, dtype=dtype)
    if dtype is not None and host.dtype != dtype:
        host = host.to(dtype)
    if host.device == device or (device.type == host.device.type and device.index is None):
        return host
    if pins_host_memory(device) and host.device.type == "cpu":
        return host.pin_memory().to(device, non_blocking=True)  # a pinned tensor pins to itself: no copy
    return host.to(device)


def pins_host_memory(device: torch.device | str) -> bool:
    """Whether host data bound for ``device`` goes through pinned memory (CUDA: see :func:`upload`)."""
    return torch.device(device).type == "cuda"


def download(*tensors: torch.Tensor, pack: bool | None = None) -> list[np.ndarray]:
    """Tensors of one device -> host arrays in one transfer (one wait on an accelerator, not one per tensor).

    ``pack`` (None: unless every tensor is on the CPU): the tensors' bytes are packed into one flat buffer on their
    device, copied once and split on the host into arrays of each tensor's dtype and shape (views of that one host
    buffer). Unpacked, each CPU tensor is returned as an array sharing its memory, as ``Tensor.numpy`` does.
    """
    if pack is None:
        pack = not all(t.device.type == "cpu" for t in tensors)
    if not pack:
        return [t.numpy() for t in tensors]
    parts, starts, start = [], [], 0
    for t in tensors:
        raw = t.contiguous().view(-1).view(torch.uint8)
        pad = -raw.numel() % 8  # every part starts 8-byte aligned, so the host views it in its own dtype
        parts += [raw, raw.new_zeros(pad)] if pad else [raw]
        starts.append(start)
        start += raw.numel() + pad
    flat = to_host(torch.cat(parts))
    return [
        flat[s : s + t.numel() * t.element_size()].view(t.dtype).view(t.shape).numpy() for s, t in zip(starts, tensors)
    ]


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` on the host, the host waiting once for the copy (a CPU tensor is returned as it is, by ``cpu()``).

    On CUDA the copy lands in pinned memory, which the copy engine writes directly (a copy into pageable memory goes
    through a staging buffer, at a fraction of the bandwidth; a frame of 16 objects at 1280x720 is 29 MB of masks).
    Elsewhere ``Tensor.cpu``.
    """
    if not pins_host_memory(tensor.device):
        return tensor.cpu()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    torch.cuda.current_stream(tensor.device).synchronize()  # the copy is the stream's last work: wait for it
    return host
