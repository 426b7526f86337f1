"""Weights held in the compute dtype: cast once when the model is prepared, not by autocast on every call.

Under ``torch.autocast(dtype=bf16)`` every ``F.linear`` / ``F.conv*`` casts its fp32 weight and bias to bf16 on
every call: about 870 cast kernels per propagated video frame at one object, each a launch on a GPU and a pass
over the weights' memory. :class:`HeldWeights` makes those casts once, at load, and keeps the copies beside the
fp32 weights. Each held module's ``forward`` is wrapped: while autocast is on in the held dtype on the module's
device type, the module's own parameters are the low-precision copies for the duration of that forward (autocast
then finds them already in its dtype and casts nothing); otherwise (fp32 calls, or a region that turns autocast
off, like the detector decoder's FFN) the module runs on its fp32 weights as before. Outside its own forward a
module always shows its fp32 parameters, so code that reads a weight directly (the mask decoder's fused
upscaling reads its transposed convolutions' weights) sees what it saw before.

The result is bit for bit what autocast computes: the cast is the same rounding, made earlier
(``tests/inference/test_held_weights.py`` compares every image and video path, and the fp32 path after holding).

What is held: the weight and bias of ``nn.Linear`` and ``nn.Conv*`` / ``nn.ConvTranspose*`` layers, and the
packed ``in_proj_weight`` / ``in_proj_bias`` of our :class:`~sam3.modeling.layers.attention.MultiheadAttention`
(used only by ``F.linear`` in its forward). Norms, embeddings, positional tables, layer scales and every other
parameter stay fp32 only: autocast computes them in fp32 or in their own dtype, and so does this.

Costs: the copies (2 bytes per held parameter for bf16 / fp16: about 1.7 GB at full size), made on the model's
device, so hold after the model is on it. Calls on one model are serialised by its callers (the service's model
queue); two threads running the same module at once in different precisions would see each other's swap.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from sam3.modeling.layers.attention import MultiheadAttention

# module type -> the names of its own parameters that only its forward uses, through autocast's
# lower-precision ops (linear, conv)
_HELD_PARAMETERS: tuple[tuple[type[nn.Module], tuple[str, ...]], ...] = (
    (nn.Linear, ("weight", "bias")),
    (nn.modules.conv._ConvNd, ("weight", "bias")),
    (MultiheadAttention, ("in_proj_weight", "in_proj_bias")),
)


class HeldWeights:
    """Low-precision copies of the autocast-cast parameters of ``model``, used by each module's forward while
    autocast runs in ``dtype`` (see the module docstring).

    ``skip``: qualified module names whose subtree is left alone (a compiled submodule: its graph casts
    inside the compiled code). ``names`` lists the held modules; :meth:`release` undoes everything.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype, skip: tuple[str, ...] = ()):
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"held weights are bf16 or fp16, not {dtype}")
        self.dtype = dtype
        self.names: list[str] = []
        self._wrapped: list[nn.Module] = []
        for name, module in model.named_modules():
            if any(name == s or name.startswith(s + ".") for s in skip) or "forward" in module.__dict__:
                continue  # skipped, or its forward is already replaced (held before, or wrapped by someone)
            wanted = next((names for kind, names in _HELD_PARAMETERS if isinstance(module, kind)), ())
            masters = {
                k: p for k in wanted if (p := module._parameters.get(k)) is not None and p.dtype == torch.float32
            }
            if not masters:
                continue
            low = {k: nn.Parameter(p.detach().to(dtype), requires_grad=False) for k, p in masters.items()}
            device_type = next(iter(masters.values())).device.type
            original = module.forward
            module.forward = functools.partial(_held_forward, module, original, masters, low, device_type, dtype)
            self._wrapped.append(module)
            self.names.append(name)

    def __len__(self) -> int:
        return len(self.names)

    def release(self) -> None:
        """Back to plain modules (the fp32 parameters were never replaced outside a held forward)."""
        for module in self._wrapped:
            del module.forward  # the instance attribute: the class's forward again
        self._wrapped.clear()
        self.names.clear()


def _held_forward(module, original, masters, low, device_type, dtype, *args, **kwargs):
    if not (torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == dtype):
        return original(*args, **kwargs)
    params = module._parameters
    params.update(low)
    try:
        return original(*args, **kwargs)
    finally:
        params.update(masters)
