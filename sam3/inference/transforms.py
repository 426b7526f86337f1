"""Image pre-processing for the detector and the click predictor, as the official processor does it.

Any accepted image becomes a uint8 (3, H, W) tensor; that is resized to (S, S) with bilinear
antialiasing *on uint8* (so the result is rounded to uint8, as torchvision v2 does for the official
``Resize``), scaled to [0, 1] and normalised with mean = std = 0.5, i.e. to [-1, 1]. The aspect
ratio is not kept (no padding), exactly as in the official pipeline.

Accepted inputs (our fix over the official code, which reads H, W from ``shape[-2:]`` for arrays and
so gets HWC numpy arrays wrong):

* ``PIL.Image``: converted to RGB first (grey, palette and RGBA images included);
* ``numpy.ndarray`` (H, W, 3) or (H, W, 4) (alpha dropped) or (H, W) grey, uint8 or float in [0, 1];
* ``torch.Tensor`` (3, H, W) or (1, H, W) grey, channels first, uint8 or float in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

ImageLike = Image.Image | np.ndarray | torch.Tensor


def to_uint8_chw(image: ImageLike) -> torch.Tensor:
    """Decode an image into a uint8 (3, H, W) CPU tensor. Raises ``ValueError`` for unusable input."""
    if isinstance(image, Image.Image):
        return TF.pil_to_tensor(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ValueError(f"numpy images must be (H, W), (H, W, 3) or (H, W, 4); got shape {image.shape}")
        arr = np.ascontiguousarray(image[:, :, :3])
        if not arr.flags.writeable:  # e.g. np.asarray(PIL image): a tensor must not share read-only memory
            arr = arr.copy()
        chw = torch.from_numpy(arr).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        chw = image.detach().cpu()
        if chw.ndim == 2:
            chw = chw[None]
        if chw.ndim != 3 or chw.shape[0] not in (1, 3):
            raise ValueError(f"tensor images must be channels-first (3, H, W) or (1, H, W); got {tuple(chw.shape)}")
    else:
        raise ValueError(f"expected a PIL image, numpy array or tensor, got {type(image).__name__}")
    if chw.shape[0] == 1:
        chw = chw.expand(3, -1, -1)
    if chw.dtype == torch.bool:
        chw = chw.to(torch.uint8) * 255
    elif chw.dtype != torch.uint8:
        if not chw.is_floating_point():
            raise ValueError(f"integer images must be uint8, got {chw.dtype}")
        chw = TF.to_dtype(chw.float(), torch.uint8, scale=True)
    return chw.contiguous()


def preprocess(
    image_u8: torch.Tensor,
    size: int,
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
    std: tuple[float, float, float] = (0.5, 0.5, 0.5),
) -> torch.Tensor:
    """uint8 (3, H, W) on any device -> normalised float32 (1, 3, size, size) on the same device."""
    resized = TF.resize(image_u8, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    x = TF.to_dtype(resized, torch.float32, scale=True)
    x = TF.normalize(x, mean=list(mean), std=list(std))
    return x.unsqueeze(0)
