"""The one place that names a device or chooses a precision policy.

Model code follows the device and dtype of its inputs and buffers; the builders, the predictors and
the server ask this module which device to use.
"""

from __future__ import annotations

import contextlib
import os

import torch


def resolve_device(override: str | torch.device | None = None) -> torch.device:
    """Pick the compute device: an explicit override (argument or ``SAM3_DEVICE``), else cuda > mps > cpu.

    Raises ``ValueError`` when an override names a device this machine does not have.
    """
    choice = override if override is not None else os.environ.get("SAM3_DEVICE") or None
    if choice is not None and str(choice).strip().lower() not in ("", "auto"):
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(choice)!r} requested but CUDA is not available")
        if device.type == "mps" and not mps_available():
            raise ValueError(f"device {str(choice)!r} requested but MPS is not available")
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


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision for one forward call: a no-op when ``dtype`` is None or fp32.

    This is a context manager used around a call, never entered globally.
    """
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    device = torch.device(device)
    if device.type == "mps":
        # MPS autocast support is partial; the service runs MPS in fp32.
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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
