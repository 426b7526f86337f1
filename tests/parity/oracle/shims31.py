"""CPU shims for the upstream SAM 3.1 oracle (``PYTHONPATH=.oracle31:.oracle``), on top of :mod:`shims`.

Runs ONLY inside the oracle subprocess. Import before anything imports ``sam3``. In addition to the SAM 3
shims (which also apply to the 3.1 tree: same position-encoding precompute, same decoder coordinates):

* ``pkg_resources``: setuptools no longer ships it, and ``sam3.model_builder`` imports it at the top only to find
  the BPE file by default; every caller here passes ``bpe_path``. A stub module stands in.
* ``torch.cuda.get_device_properties``: ``sam3_multiplex_base`` calls it at import time (to turn TF32 on for
  Ampere); without a GPU it raises. It answers "not Ampere" (major 0), so nothing is switched on.
* ``sam3.model.vitdet.addmm_act``: the 3.1 tree's ViT MLP runs ``fc1`` + GELU through
  ``sam3.perflib.fused.addmm_act``, which casts input, weight and bias to **bf16 unconditionally** (then ``fc2``
  fails on CPU: bf16 input, fp32 weight). The fp32 reference keeps the same fused op
  (``aten._addmm_activation``, exact GELU on CPU) without the casts.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shims  # noqa: E402  (hides the GPU before torch loads)

import torch  # noqa: E402

install_cuda_identity = shims.install_cuda_identity


def install() -> None:
    """Apply the SAM 3 shims and the 3.1 ones (idempotent)."""
    sys.modules.setdefault("pkg_resources", types.ModuleType("pkg_resources"))
    if not shims.KEEP_GPU:
        torch.cuda.get_device_properties = lambda *a, **k: types.SimpleNamespace(major=0, minor=0)
    shims.install()
    if not shims.KEEP_GPU:
        from sam3.model import vitdet
        from sam3.perflib import fused

        def addmm_act_fp32(activation, linear, mat1):
            flat = mat1.reshape(-1, mat1.shape[-1])
            use_gelu = activation in (torch.nn.functional.gelu, torch.nn.GELU)
            if not use_gelu and activation not in (torch.nn.functional.relu, torch.nn.ReLU):
                raise ValueError(f"Unexpected activation {activation}")
            y = fused.addmm_act_op(linear.bias, flat, linear.weight.t(), beta=1, alpha=1, use_gelu=use_gelu)
            return y.view(*mat1.shape[:-1], y.shape[-1])

        vitdet.addmm_act = addmm_act_fp32
