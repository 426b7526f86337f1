"""Masks on the wire, in one place: the contract's 0/255 PNG (raw or base64 in JSON) and the COCO
run-length encoding (``mask_format="rle"``), written by pycocotools exactly as ``pycocotools.mask.encode``.

``encode_mask(mask, fmt)`` is what every route calls; ``MaskFormat`` is the wire value.
"""

from __future__ import annotations

import base64
import io
from typing import Literal

import numpy as np
from PIL import Image

MaskFormat = Literal["png", "rle"]
MASK_FORMATS: tuple[str, ...] = ("png", "rle")


def mask_to_png(mask: np.ndarray) -> bytes:
    """Encode a 2-D mask (bool, or numbers where > 0 is foreground) as a single-channel 8-bit PNG of 0/255."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    pixels = np.where(mask > 0, np.uint8(255), np.uint8(0)) if mask.dtype != np.bool_ else mask.astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_b64(png: bytes) -> str:
    """Base64 text of PNG bytes, as masks travel inside JSON."""
    return base64.b64encode(png).decode("ascii")


def mask_to_b64png(mask: np.ndarray) -> str:
    return png_b64(mask_to_png(mask))


def mask_to_rle(mask: np.ndarray) -> dict:
    """(H, W) mask -> COCO RLE ``{"size": [H, W], "counts": str}`` (column-major, compressed counts as text)."""
    from pycocotools import mask as mask_utils

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask > 0 if mask.dtype != np.bool_ else mask, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("utf-8")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """COCO RLE (counts as str or bytes) -> (H, W) bool."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    coded = {"size": list(rle["size"]), "counts": counts.encode("utf-8") if isinstance(counts, str) else counts}
    return mask_utils.decode(coded).astype(bool)


def encode_mask(mask: np.ndarray, fmt: MaskFormat = "png") -> str | dict:
    """One mask as it travels inside JSON: base64 PNG text, or a COCO RLE dict."""
    if fmt == "rle":
        return mask_to_rle(mask)
    if fmt == "png":
        return mask_to_b64png(mask)
    raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {fmt!r}")
