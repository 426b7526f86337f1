"""Masks as the service sends them, decoded with numpy (no torch, no pycocotools needed on the client).

* PNG: single-channel 8-bit, 0 or 255, at the image (frame) size (Pillow reads it);
* COCO RLE (``mask_format="rle"``): ``{"size": [height, width], "counts": "<compressed string>"}`` exactly
  as ``pycocotools.mask.encode`` writes it: run lengths over the mask in column-major order, starting with
  a run of zeros, each length in pycocotools' 5-bit-per-character code (48 is added to every character;
  from the third run on, each is stored as the difference to the run two before it).
  Uncompressed RLE (``counts`` as a list of ints) is accepted too.

numpy and Pillow are imported when a mask is decoded, so ``import milimo_clients`` needs neither
(``pip install "milimo-clients[masks]"`` brings both).
"""

from __future__ import annotations

import base64
import io
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def rle_counts(counts: str | bytes) -> list[int]:
    """Run lengths of a COCO compressed ``counts`` string (the inverse of pycocotools' ``rleToString``)."""
    text = counts.decode("ascii") if isinstance(counts, bytes) else counts
    runs: list[int] = []
    p = 0
    while p < len(text):
        value = 0
        shift = 0
        more = True
        while more:
            if p >= len(text):
                raise ValueError("counts: truncated run length")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"counts: invalid character {text[p]!r}")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:  # sign bit of the last 5-bit group
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def decode_rle(rle: dict[str, Any]):
    """A COCO RLE as a ``(height, width)`` bool numpy array."""
    import numpy as np

    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise ValueError('rle: expected {"size": [height, width], "counts": ...}') from None
    runs = list(counts) if isinstance(counts, list) else rle_counts(counts)
    runs_arr = np.asarray(runs, dtype=np.int64)
    if height < 0 or width < 0 or (runs_arr < 0).any() or int(runs_arr.sum()) != height * width:
        raise ValueError(
            f"rle: run lengths sum to {int(runs_arr.sum())}, the size {height}x{width} needs {height * width}"
        )
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs_arr)
    return flat.reshape(width, height).T  # column-major, as COCO stores it


def decode_png(png: bytes):
    """A 0/255 PNG mask as a ``(height, width)`` bool numpy array."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("L")) > 127


def wire_mask(value: str | dict[str, Any]) -> bytes | dict[str, Any]:
    """A mask as it arrives in a JSON answer -> its wire form: base64 PNG text to PNG bytes, an RLE dict as is."""
    return value if isinstance(value, dict) else base64.b64decode(value)


def mask_array(mask: bytes | dict[str, Any]):
    """Either wire form (PNG bytes or a COCO RLE dict) as a ``(height, width)`` bool array."""
    return decode_rle(mask) if isinstance(mask, dict) else decode_png(mask)


def mask_png(mask: bytes | dict[str, Any]) -> bytes:
    """Either wire form as 0/255 PNG bytes (a PNG is returned unchanged)."""
    if isinstance(mask, (bytes, bytearray)):
        if not bytes(mask).startswith(PNG_SIGNATURE):
            raise ValueError("mask: not a PNG")
        return bytes(mask)
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(decode_rle(mask).astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()


class HasMask:
    """``mask_png`` / ``mask_array()`` / ``save_mask(path)`` for a result with a ``mask`` field (PNG bytes or a
    COCO RLE dict): the objects of ``/detect`` and ``/segment/everything``."""

    mask: bytes | dict[str, Any]

    @property
    def mask_png(self) -> bytes:
        return mask_png(self.mask)

    def mask_array(self):
        """The mask as a (H, W) bool numpy array."""
        return mask_array(self.mask)

    def save_mask(self, path) -> str:
        from pathlib import Path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.mask_png)
        return str(path)
