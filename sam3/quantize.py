"""Dynamic int8 quantisation of the large linear layers, for CPU inference (``SAM3_PRECISION=int8``).

Weights are stored as int8 (per output channel); activations are quantised on the fly per call, the
matmul runs in int8 (fbgemm / oneDNN kernels) and the result is dequantised to fp32. Everything else
(convolutions, norms, attention softmax, the small linears) stays fp32.

Library choice (torch 2.14, checked 2026-12): ``torch.ao.quantization.quantize_dynamic`` is marked for
migration to torchao, but it is the path with eager CPU int8 kernels: on this AVX2 EPYC a
5184x1024 @ 1024x4096 linear took 1.38-1.52 s quantised against 1.59-1.82 s fp32 (busy machine), while
torchao 0.18's ``quantize_(m, Int8DynamicActivationInt8WeightConfig())`` took 47.6 s in eager mode (its
CPU int8 matmul is only fast once lowered by ``torch.compile``/inductor). When torch drops the eager API,
switch this one function to torchao + compile; callers do not change.

Engine: the weights are packed for one quantised engine, and each call runs that engine's kernel whatever
``torch.backends.quantized.engine`` says later. ``onednn`` is used where torch has it: on the AVX2 EPYC of
bench/README.md its dynamic linears took 682 ms against 766 ms for the default ``x86`` (fbgemm) engine over
the four linear shapes of one ViT block at 1008 px (5184 tokens; 2 threads), with the same relative error.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn

# Linears with fewer weights than this stay fp32: quantising them costs more (per-call activation
# quantisation) than it saves, and the small heads (box / score MLPs) are the most precision-sensitive.
DEFAULT_MIN_WEIGHTS = 256 * 128


def preferred_engine() -> str:
    """The quantised engine to pack weights for: ``onednn`` where this torch has it, else torch's default."""
    return "onednn" if "onednn" in torch.backends.quantized.supported_engines else torch.backends.quantized.engine


@contextlib.contextmanager
def _quantized_engine(name: str) -> Iterator[None]:
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def quantize_linear_int8(
    model: nn.Module, min_weights: int = DEFAULT_MIN_WEIGHTS, engine: str | None = None
) -> list[str]:
    """Replace, in place, every ``nn.Linear`` of ``model`` with at least ``min_weights`` weights by a
    dynamically quantised int8 linear. The model must be on the CPU and in eval mode.

    Returns the qualified names of the quantised layers (empty when none qualified).
    ``nn.MultiheadAttention``'s output projection is left alone (torch does not quantise it).
    ``engine``: the quantised engine whose kernels run the layers (default :func:`preferred_engine`); the
    global ``torch.backends.quantized.engine`` is left as it was.
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 dynamic quantisation runs on the CPU: move the model to the CPU first")
    names = {
        name
        for name, module in model.named_modules()
        if type(module) is nn.Linear and module.weight.numel() >= min_weights
    }
    if not names:
        return []
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # The eager API warns that it is deprecated in favour of torchao; see the module docstring.
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
        with _quantized_engine(engine or preferred_engine()):
            quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in names}, inplace=True)
    return sorted(names)


def is_quantized(model: nn.Module) -> bool:
    """True when ``model`` holds at least one dynamically quantised linear."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return any(isinstance(m, DynamicLinear) for m in model.modules())
