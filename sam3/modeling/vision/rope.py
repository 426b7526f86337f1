"""2-D axial rotary position embedding (RoPE) of the ViT trunk.

Each attention head of size ``d`` is read as ``d/2`` complex numbers built from adjacent channel
pairs ``(2j, 2j+1) = (real, imag)``. The first ``d/4`` of them are rotated by the token's column
``x`` and the last ``d/4`` by its row ``y``, with the same ``d/4`` frequencies on both axes:

    freq_j = theta ** (-4j / d),  j = 0 .. d/4 - 1
    angle  = [x * scale * freq | y * scale * freq]      (tokens in row-major order: x = t % W, y = t // W)

Windowed blocks use positions 0..w-1 inside their window with ``scale = 1``. Global blocks see the
whole ``g x g`` grid with ``scale = w / g`` (1/3 for the released model), so their positions span the
same range the windows were trained on.

The tables are stored in the checkpoint as complex64 ``freqs_cis`` buffers of shape (H*W, d/2);
the trunk keeps them as persistent buffers so strict loading sees them.
"""

from __future__ import annotations

import torch


def axial_rope_table(
    head_dim: int,
    height: int,
    width: int,
    scale: float = 1.0,
    theta: float = 10000.0,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Rotations for a ``height x width`` token grid -> complex64 (height*width, head_dim // 2)."""
    if head_dim % 4:
        raise ValueError(f"axial RoPE needs head_dim divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4, device=device)[:quarter].float() / head_dim))
    t = torch.arange(height * width, dtype=torch.float32, device=device)
    # Scale after the float conversion, as the tables in the checkpoint were built.
    pos_x = (t % width) * scale
    pos_y = torch.div(t, width, rounding_mode="floor") * scale
    angles = torch.cat([torch.outer(pos_x, freqs), torch.outer(pos_y, freqs)], dim=-1)
    return torch.polar(torch.ones_like(angles), angles)


def apply_axial_rope(q: torch.Tensor, k: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k (..., L, d) by ``table`` (L, d/2) complex; returns tensors of the input dtype.

    The rotation runs in fp32 complex arithmetic whatever the input dtype (bf16 inputs included).
    """

    def rotate(x: torch.Tensor) -> torch.Tensor:
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * table).flatten(-2).to(x.dtype)

    return rotate(q), rotate(k)
