"""CPU shims that let the official ``sam3==0.1.4`` package build and run without a GPU (spec section 6).

Runs ONLY inside the oracle subprocess (``PYTHONPATH=.oracle python -P ...``), where ``import sam3`` is the
official package. Import this module before anything imports ``torch`` or ``sam3``: it hides any GPU so the
official code takes its CPU branches everywhere (a GPU would flip it into bf16 autocast and cuda-resident
caches, which is not the fp32 reference we compare against).

What is patched, and why:
* ``PositionEmbeddingSine.__init__``: its cache precompute allocates on ``"cuda"``; the cached sizes are never
  used at inference anyway, so the precompute is skipped (``precompute_resolution=None``).
* ``TransformerDecoder._get_coords``: called from the constructor with ``device="cuda"``; mapped to CPU.
* ``torch.Tensor.pin_memory``: needs an accelerator on CPU-only torch; the geometry encoder calls it even for
  zero boxes. Made the identity.
* ``torch.Tensor.cuda`` (opt-in, :func:`install_cuda_identity`): only the video path calls it unconditionally.
"""

from __future__ import annotations

import os

# Must happen before torch initialises CUDA: the reference is the CPU fp32 code path. bench/device_check.py
# sets SAM3_ORACLE_GPU=1 to time the release on a GPU as users run it: then nothing is hidden or patched.
KEEP_GPU = os.environ.get("SAM3_ORACLE_GPU") == "1"
if not KEEP_GPU:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import torch  # noqa: E402

_INSTALLED = False


def _identity(self, *args, **kwargs):
    return self


def install() -> None:
    """Apply the shims once (idempotent). Call before building any official module."""
    global _INSTALLED
    if _INSTALLED or KEEP_GPU:
        return
    from sam3.model import position_encoding
    from sam3.model.decoder import TransformerDecoder

    sine_init = position_encoding.PositionEmbeddingSine.__init__

    def sine_init_no_precompute(self, *args, precompute_resolution=None, **kwargs):
        # The precompute only fills a cache with sizes that never occur, and does it on "cuda".
        sine_init(self, *args, precompute_resolution=None, **kwargs)

    position_encoding.PositionEmbeddingSine.__init__ = sine_init_no_precompute

    get_coords = TransformerDecoder._get_coords

    def get_coords_cpu(H, W, device):
        if str(device).startswith("cuda"):
            device = "cpu"
        return get_coords(H, W, device)

    TransformerDecoder._get_coords = staticmethod(get_coords_cpu)
    torch.Tensor.pin_memory = _identity
    _INSTALLED = True


def install_cuda_identity() -> None:
    """Make ``Tensor.cuda()`` a no-op (the official video code moves frames and memories unconditionally)."""
    torch.Tensor.cuda = _identity
