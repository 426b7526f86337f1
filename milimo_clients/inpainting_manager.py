"""``InpaintingManager`` / ``AsyncInpaintingManager``: masks from clicks, boxes or text, via the SAM 3 service.

Image inputs may be a path, bytes, a binary file object or a PIL image; every image answer carries the
service's ``image_id`` (its feature-cache key), which later calls may send instead of the image.
Masks written to disk go to ``output_path`` when given, else into the manager's ``output_dir``
(``SAM_OUTPUT_DIR``, default ``./sam_masks``) as ``<image stem>_<kind>_<request digest>.png``: the same
request writes the same file, so nothing piles up in a temp folder.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from milimo_clients.base import AsyncServiceClient, ServiceClient
from milimo_clients.call import Call, ImageInput, form_json, image_part, input_stem
from milimo_clients.errors import SamServiceError, json_body, missing_field, png_body
from milimo_clients.everything import EVERYTHING_KNOBS, EverythingResult
from milimo_clients.masks import HasMask, mask_array, wire_mask

Mask = bytes | dict  # PNG bytes, or a COCO RLE dict with mask_format="rle"


@dataclass(frozen=True)
class DetectedObject(HasMask):
    """One detected object. ``mask`` is PNG bytes (0/255, image size) or a COCO RLE dict."""

    mask: Mask = field(repr=False)
    bbox: tuple[float, float, float, float]  # pixel x0, y0, x1, y1
    score: float
    label: str
    prompt_index: int = 0  # index into ``texts`` (0 for a single ``text``)


@dataclass(frozen=True)
class DetectionResult:
    """``/detect`` answer: objects sorted by score, highest first."""

    objects: list[DetectedObject]
    count: int
    width: int
    height: int
    image_id: str | None = None
    prompts: list[dict[str, Any]] = field(default_factory=list)  # per prompt: index, text, confidence, count

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> DetectionResult:
        objects = [
            DetectedObject(
                mask=wire_mask(o["mask"]),
                bbox=tuple(float(v) for v in o["bbox"]),
                score=float(o["score"]),
                label=str(o["label"]),
                prompt_index=int(o.get("prompt_index", 0)),
            )
            for o in body["objects"]
        ]
        return cls(
            objects,
            int(body["count"]),
            int(body["width"]),
            int(body["height"]),
            body.get("image_id"),
            list(body.get("prompts") or []),
        )


@dataclass(frozen=True)
class MaskResult:
    """``/predict/mask`` answer: the best mask (PNG), its score, and the ``image_id`` to click on again.

    With ``multimask=True`` ``masks``/``scores`` hold every candidate, best first. ``refined`` says whether
    the object's previous mask was the input (with ``object_id``). ``logits`` holds the low-resolution
    logits when ``return_logits=True`` was asked for (base64 float32 as sent; ``logits_arrays()`` decodes).
    """

    png: bytes = field(repr=False)
    score: float | None
    image_id: str | None
    object_id: str | None = None
    masks: list[bytes] = field(default_factory=list, repr=False)
    scores: list[float] = field(default_factory=list)
    refined: bool | None = None
    logits: list[str] | None = field(default=None, repr=False)
    logits_shape: tuple[int, ...] | None = None

    def mask_array(self):
        return mask_array(self.png)

    def logits_arrays(self) -> list:
        """The low-resolution logits as float32 numpy arrays of ``logits_shape``, best first."""
        import numpy as np

        if self.logits is None or self.logits_shape is None:
            return []
        return [np.frombuffer(base64.b64decode(b), dtype="<f4").reshape(self.logits_shape) for b in self.logits]

    def save(self, path: str | os.PathLike) -> str:
        return _write(self.png, Path(path))


def _write(png: bytes, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return str(path)


def _parse(call: Call, read: Callable[[httpx.Response], Any]) -> Call:
    """``call`` whose answer is read by ``read``; a missing field is a ``SamProtocolError``."""

    def parse(response: httpx.Response) -> Any:
        try:
            return read(response)
        except (KeyError, TypeError, ValueError) as exc:
            raise missing_field(exc, call.method, call.path, response) from None

    return replace(call, parse=parse)


class _InpaintingCalls:
    """The method bodies of both managers: each builds a ``Call`` and hands it to ``_execute``."""

    output_dir: Path
    _execute: Callable[[Call], Any]

    # ------------------------------------------------------------------ request building
    @staticmethod
    def _image_form(image: ImageInput | None, image_id: str | None) -> tuple[dict, dict[str, str]]:
        if (image is None) == (image_id is None):
            raise SamServiceError("image: give either an image or an image_id (from an earlier answer)")
        if image_id is not None:
            return {}, {"image_id": str(image_id)}
        return {"image": image_part(image)}, {}

    @staticmethod
    def _prompt_form(text, texts, boxes, box_labels, confidence) -> dict[str, str]:
        data = {}
        if isinstance(confidence, (int, float)):
            data["confidence"] = str(float(confidence))
        elif confidence is not None:  # one threshold per prompt
            data["confidence"] = form_json([float(c) for c in confidence])
        if text is not None:
            data["text"] = text
        for key, value in (("texts", texts), ("boxes", boxes), ("box_labels", box_labels)):
            if value is not None:
                data[key] = form_json(value)
        return data

    def _mask_call(self, image, image_id, points, labels, box, object_id, refine, multimask, return_logits) -> Call:
        files, data = self._image_form(image, image_id)
        if points is not None:
            data["points"] = form_json([[float(x), float(y)] for x, y in points])
        if labels is not None:
            data["labels"] = form_json([int(v) for v in labels])
        if box is not None:
            data["boxes"] = form_json(box)
        if object_id is not None:
            data["object_id"] = str(object_id)
        if refine:
            data["refine"] = "true"
        if multimask:
            data["multimask"] = "true"
        if return_logits:
            data["return_logits"] = "true"
        return Call("POST", "/predict/mask", parse=lambda r: r, idempotent=not refine, data=data, files=files or None)

    def _output(self, output_path, image, kind: str, call: Call) -> Path:
        if output_path is not None:
            return Path(output_path)
        digest = hashlib.sha256(repr((call.path, sorted((call.data or {}).items()))).encode())
        for _, content, _ in (call.files or {}).values():
            digest.update(content)
        return self.output_dir / f"{input_stem(image)}_{kind}_{digest.hexdigest()[:12]}.png"

    # ------------------------------------------------------------------ clicks and boxes
    def get_mask_from_sam(
        self,
        image: ImageInput | None = None,
        points: Sequence[Sequence[float]] | None = None,
        labels: Sequence[int] | None = None,
        output_path: str | os.PathLike | None = None,
        *,
        box: Sequence[float] | None = None,
        image_id: str | None = None,
        object_id: str | None = None,
        refine: bool = False,
    ):
        """Mask from clicks (pixel ``[x, y]``; labels 1 = object, 0 = background; default all 1) and/or a
        normalised ``[cx, cy, w, h]`` box. Saves the PNG and returns its path."""
        call = self._mask_call(image, image_id, points, labels, box, object_id, refine, False, False)
        out = self._output(output_path, image, "mask", call)
        return self._execute(_parse(call, lambda r: _write(png_body(r, call.method, call.path), out)))

    def predict_mask(
        self,
        image: ImageInput | None = None,
        points: Sequence[Sequence[float]] | None = None,
        labels: Sequence[int] | None = None,
        *,
        box: Sequence[float] | None = None,
        image_id: str | None = None,
        object_id: str | None = None,
        refine: bool = False,
        multimask: bool = False,
        return_logits: bool = False,
    ):
        """Like ``get_mask_from_sam`` but returns a ``MaskResult`` (mask bytes, score, ``image_id``).

        Refining clicks: send ``image_id`` (no upload, no second backbone run) and the same ``object_id``
        with ``refine=True``; the service then starts from that object's previous mask.
        """
        call = self._mask_call(image, image_id, points, labels, box, object_id, refine, multimask, return_logits)

        def read(response: httpx.Response) -> MaskResult:
            refined_header = response.headers.get("X-Refined")
            if response.headers.get("content-type", "").startswith("image/"):
                png = png_body(response, call.method, call.path)
                score = response.headers.get("X-Mask-Score")
                scores = [] if score is None else [float(score)]
                refined = None if refined_header is None else refined_header == "true"
                return MaskResult(
                    png,
                    scores[0] if scores else None,
                    response.headers.get("X-Image-ID"),
                    object_id,
                    [png],
                    scores,
                    refined,
                )
            body = json_body(response, call.method, call.path)
            masks = [base64.b64decode(m) for m in body["masks"]]
            scores = [float(s) for s in body["scores"]]
            shape = body.get("logits_shape")
            return MaskResult(
                masks[0],
                scores[0] if scores else None,
                body.get("image_id") or response.headers.get("X-Image-ID"),
                object_id,
                masks,
                scores,
                body.get("refined"),
                body.get("low_res_logits"),
                None if shape is None else tuple(int(v) for v in shape),
            )

        return self._execute(_parse(call, read))

    def refine_mask(
        self, image_id: str, object_id: str, points: Sequence[Sequence[float]], labels: Sequence[int] | None = None
    ):
        """Another click on the object ``object_id`` of an image the service still holds (``MaskResult``)."""
        return self.predict_mask(points=points, labels=labels, image_id=image_id, object_id=object_id, refine=True)

    # ------------------------------------------------------------------ text and exemplars
    def get_mask_from_text(
        self,
        image: ImageInput | None = None,
        text: str | None = None,
        confidence: float | Sequence[float] | None = None,
        output_path: str | os.PathLike | None = None,
        *,
        texts: Sequence[str] | None = None,
        boxes: Sequence[Sequence[float]] | None = None,
        box_labels: Sequence[int] | None = None,
        image_id: str | None = None,
    ):
        """The union of every object matching the prompts as one PNG (all zero when nothing matches); returns its path."""
        files, data = self._image_form(image, image_id)
        data.update(self._prompt_form(text, texts, boxes, box_labels, confidence))
        call = Call("POST", "/segment/text", parse=lambda r: r, idempotent=True, data=data, files=files or None)
        out = self._output(output_path, image, "textmask", call)
        return self._execute(_parse(call, lambda r: _write(png_body(r, call.method, call.path), out)))

    def merge_selected(
        self,
        image: ImageInput | None,
        text: str | None,
        object_indices: Sequence[int],
        confidence: float | Sequence[float] | None = None,
        output_path: str | os.PathLike | None = None,
        *,
        texts: Sequence[str] | None = None,
        boxes: Sequence[Sequence[float]] | None = None,
        box_labels: Sequence[int] | None = None,
        image_id: str | None = None,
    ):
        """One PNG of only the chosen objects of an earlier ``detect_objects`` answer (indices into its
        ``objects``; same image, prompts and confidence). Returns its path."""
        files, data = self._image_form(image, image_id)
        data.update(self._prompt_form(text, texts, boxes, box_labels, confidence))
        data["object_indices"] = form_json([int(i) for i in object_indices])
        call = Call("POST", "/segment/text", parse=lambda r: r, idempotent=True, data=data, files=files or None)
        out = self._output(output_path, image, "selected", call)
        return self._execute(_parse(call, lambda r: _write(png_body(r, call.method, call.path), out)))

    def detect_objects(
        self,
        image: ImageInput | None = None,
        text: str | None = None,
        confidence: float | Sequence[float] | None = None,
        *,
        texts: Sequence[str] | None = None,
        boxes: Sequence[Sequence[float]] | None = None,
        box_labels: Sequence[int] | None = None,
        image_id: str | None = None,
        mask_format: str = "png",
    ):
        """Every object matching the prompts (``text``, several ``texts``, box exemplars with
        ``box_labels`` 1 = positive, 0 = negative) with its mask, pixel box, score and ``prompt_index``.

        ``confidence``: a threshold in 0..1, a list with one per prompt, or None for the service's default
        (0.5; the same for ``get_mask_from_text`` and ``merge_selected``)."""
        files, data = self._image_form(image, image_id)
        data.update(self._prompt_form(text, texts, boxes, box_labels, confidence))
        if mask_format != "png":
            data["mask_format"] = mask_format
        call = Call("POST", "/detect", parse=lambda r: r, idempotent=True, data=data, files=files or None)
        return self._execute(_parse(call, lambda r: DetectionResult.from_json(json_body(r, call.method, call.path))))

    def segment_everything(
        self,
        image: ImageInput | None = None,
        *,
        image_id: str | None = None,
        mask_format: str = "png",
        **knobs: int | float | bool,
    ):
        """Every object of the image without a prompt (``/segment/everything``), largest first.

        ``knobs``: SAM 2's ``SAM2AutomaticMaskGenerator`` arguments (``points_per_side=32``,
        ``pred_iou_thresh=0.8``, ``crop_n_layers=0``, ...; ``EVERYTHING_KNOBS``); unset ones take its defaults.
        ``crop_n_layers`` > 0 needs the ``image`` (the service caches features, not pixels)."""
        unknown = sorted(set(knobs) - set(EVERYTHING_KNOBS))
        if unknown:
            raise SamServiceError(f"{unknown[0]}: not a knob of /segment/everything (one of {EVERYTHING_KNOBS})")
        files, data = self._image_form(image, image_id)
        for name, value in knobs.items():
            data[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if mask_format != "png":
            data["mask_format"] = mask_format
        call = Call("POST", "/segment/everything", parse=lambda r: r, idempotent=True, data=data, files=files or None)
        return self._execute(_parse(call, lambda r: EverythingResult.from_json(json_body(r, call.method, call.path))))


class InpaintingManager(_InpaintingCalls, ServiceClient):
    """Client of the image endpoints (``/predict/mask``, ``/segment/text``, ``/detect``, ``/segment/everything``).

    >>> sam = InpaintingManager()                       # SAM_SERVICE_URL or http://localhost:8001
    >>> sam.get_mask_from_sam("frame.png", [[320, 240]])  # -> path of the saved mask PNG
    """


class AsyncInpaintingManager(_InpaintingCalls, AsyncServiceClient):
    """``InpaintingManager`` on ``httpx.AsyncClient``: the same methods, awaited.

    >>> async with AsyncInpaintingManager() as sam:
    ...     found = await sam.detect_objects(upload_bytes, "a person")
    """
