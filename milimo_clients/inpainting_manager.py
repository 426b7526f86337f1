"""``InpaintingManager``: masks for inpainting from clicks, boxes or text, via the SAM 3 service."""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from milimo_clients.base import SamServiceError, ServiceClient


@dataclass(frozen=True)
class DetectedObject:
    """One detected object. ``mask_png`` is a single-channel 0/255 PNG at the image size."""

    mask_png: bytes
    bbox: tuple[float, float, float, float]  # pixel x0, y0, x1, y1
    score: float
    label: str

    def mask_array(self):
        """The mask as a (H, W) bool numpy array (needs numpy and Pillow)."""
        import io

        import numpy as np
        from PIL import Image

        with Image.open(io.BytesIO(self.mask_png)) as image:
            return np.asarray(image) > 127

    def save_mask(self, path: str | os.PathLike) -> str:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(self.mask_png)
        return str(path)


@dataclass(frozen=True)
class DetectionResult:
    """``/detect`` answer: objects sorted by score, highest first."""

    objects: list[DetectedObject]
    count: int
    width: int
    height: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "DetectionResult":
        objects = [
            DetectedObject(
                mask_png=base64.b64decode(o["mask"]),
                bbox=tuple(float(v) for v in o["bbox"]),
                score=float(o["score"]),
                label=str(o["label"]),
            )
            for o in body["objects"]
        ]
        return cls(objects=objects, count=int(body["count"]), width=int(body["width"]), height=int(body["height"]))


def _image_part(image_path: str | os.PathLike) -> tuple[str, bytes, str]:
    path = Path(image_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SamServiceError(f"image_path: cannot read {path}: {exc.strerror or exc}") from None
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.name, data, mime


def _write_png(png: bytes, output_path: str | os.PathLike | None, image_path: str | os.PathLike, tag: str) -> str:
    """Write ``png`` to ``output_path`` or, when None, to a new file in the temp folder."""
    if output_path is None:
        fd, name = tempfile.mkstemp(prefix=f"{Path(image_path).stem}_{tag}_", suffix=".png")
        with os.fdopen(fd, "wb") as f:
            f.write(png)
        return name
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    return str(out)


class InpaintingManager(ServiceClient):
    """Client of the image endpoints (``/predict/mask``, ``/segment/text``, ``/detect``).

    >>> sam = InpaintingManager()                       # SAM_SERVICE_URL or http://localhost:8001
    >>> sam.get_mask_from_sam("frame.png", [[320, 240]])  # -> path of the saved mask PNG
    """

    def get_mask_from_sam(
        self,
        image_path: str | os.PathLike,
        points: Sequence[Sequence[float]] | None,
        labels: Sequence[int] | None = None,
        output_path: str | os.PathLike | None = None,
        *,
        box: Sequence[float] | None = None,
    ) -> str:
        """Mask from clicks (pixel ``[x, y]``; labels 1 = object, 0 = background; default all 1) and/or a
        normalised ``[cx, cy, w, h]`` box. Saves the PNG and returns its path."""
        data: dict[str, str] = {}
        if points is not None:
            data["points"] = json.dumps([[float(x), float(y)] for x, y in points])
        if labels is not None:
            data["labels"] = json.dumps([int(v) for v in labels])
        if box is not None:
            data["boxes"] = json.dumps([float(v) for v in box])
        response = self.request("POST", "/predict/mask", files={"image": _image_part(image_path)}, data=data)
        return _write_png(response.content, output_path, image_path, "mask")

    def get_mask_from_text(
        self,
        image_path: str | os.PathLike,
        text: str,
        confidence: float = 0.5,
        output_path: str | os.PathLike | None = None,
    ) -> str:
        """The union of every object matching ``text`` as one PNG (all zero when nothing matches); returns its path."""
        response = self.request(
            "POST",
            "/segment/text",
            files={"image": _image_part(image_path)},
            data={"text": text, "confidence": str(confidence)},
        )
        return _write_png(response.content, output_path, image_path, "textmask")

    def detect_objects(self, image_path: str | os.PathLike, text: str, confidence: float = 0.5) -> DetectionResult:
        """Every object matching ``text`` with its mask, pixel box and score, best first."""
        response = self.request(
            "POST",
            "/detect",
            files={"image": _image_part(image_path)},
            data={"text": text, "confidence": str(confidence)},
        )
        return DetectionResult.from_json(response.json())
