"""Image endpoints (multipart forms): POST /predict/mask, /detect, /segment/text."""

from __future__ import annotations

from typing import Annotated

import anyio
import numpy as np
from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response
from PIL import Image

from server.dependencies import ModelsDep, SettingsDep
from server.errors import BadValue, TooLarge, Unprocessable
from server.imaging import ImageLimits, decode_image
from server.mask_codec import mask_to_b64png, mask_to_png
from server.prompts import parse_json_field, validate_boxes, validate_labels, validate_points
from server.schemas import DetectedObject, DetectResponse, MultiMaskResponse
from server.settings import Settings

router = APIRouter(tags=["image"])

ImageFile = Annotated[UploadFile, File(description="PNG / JPEG / WEBP ... image")]
Confidence = Annotated[
    float | None, Form(ge=0.0, le=1.0, description="keep objects scoring above this (default SAM3_CONFIDENCE)")
]


async def read_image(upload: UploadFile, settings: Settings) -> Image.Image:
    """Read and decode the ``image`` part off the event loop (413 / 415 / 400 on bad uploads)."""
    if upload.size is not None and upload.size > settings.max_upload_bytes:
        raise TooLarge(
            f"image: the upload is {upload.size / 2**20:.1f} MB, over the {settings.max_upload_mb:g} MB limit "
            "(SAM_MAX_UPLOAD_MB)"
        )
    data = await upload.read(settings.max_upload_bytes + 1)
    return await anyio.to_thread.run_sync(
        lambda: decode_image(data, limits=ImageLimits.from_settings(settings))
    )


def check_text(text: str, settings: Settings) -> str:
    text = text.strip()
    if not text:
        raise Unprocessable("text: must not be empty")
    if len(text) > settings.max_text_length:
        raise Unprocessable(
            f"text: {len(text)} characters, at most {settings.max_text_length} allowed (SAM_MAX_TEXT_LENGTH)"
        )
    return text


@router.post("/predict/mask", response_model=None, responses={200: {"content": {"image/png": {}}}})
async def predict_mask(
    settings: SettingsDep,
    models: ModelsDep,
    image: ImageFile,
    points: Annotated[str | None, Form(description="JSON list of pixel [x, y] pairs")] = None,
    labels: Annotated[str | None, Form(description="JSON list of 0/1, one per point (default: all 1)")] = None,
    multimask: Annotated[bool, Form(description="return 3 candidates as JSON")] = False,
    boxes: Annotated[str | None, Form(description="JSON [cx, cy, w, h] normalised (or a list with one box)")] = None,
) -> Response | MultiMaskResponse:
    """Click / box segmentation with the interactive (SAM-1 task) head."""
    # Parse the cheap fields before decoding the image, so bad JSON costs nothing.
    raw_points = parse_json_field(points, "points")
    raw_labels = parse_json_field(labels, "labels")
    raw_boxes = parse_json_field(boxes, "boxes")
    box_list = validate_boxes(raw_boxes, max_boxes=1) if raw_boxes is not None else []
    if raw_points is None and not box_list:
        if raw_labels is not None:
            raise BadValue("labels: labels given without points")
        raise BadValue("points: give points (JSON list of [x, y]) or boxes ([cx, cy, w, h]); both are missing")
    models.require_loaded()
    pil = await read_image(image, settings)
    width, height = pil.size
    point_list = (
        validate_points(raw_points, width=width, height=height, max_points=settings.max_points)
        if raw_points is not None
        else []
    )
    label_list = validate_labels(raw_labels, len(point_list))
    box_xyxy = box_list[0].to_pixel_xyxy(width, height) if box_list else None

    candidates = await models.predict_mask(pil, point_list, label_list, box_xyxy, multimask)
    if multimask:
        masks = await anyio.to_thread.run_sync(lambda: [mask_to_b64png(c.mask) for c in candidates])
        return MultiMaskResponse(masks=masks, scores=[c.score for c in candidates])
    best = candidates[0]
    png = await anyio.to_thread.run_sync(mask_to_png, best.mask)
    return Response(png, media_type="image/png", headers={"X-Mask-Score": f"{best.score:.6f}"})


async def _detect_text(settings, models, image, text: str, confidence: float | None):
    """The decoded upload and its detections for ``text`` (the settings' default confidence if none given)."""
    conf = settings.confidence if confidence is None else confidence
    models.require_loaded()
    pil = await read_image(image, settings)
    return pil, await models.detect(pil, text, conf)


@router.post("/detect", response_model=DetectResponse)
async def detect(
    settings: SettingsDep,
    models: ModelsDep,
    image: ImageFile,
    text: Annotated[str, Form(description="what to find, e.g. 'a red car'")],
    confidence: Confidence = None,
) -> DetectResponse:
    """Text-prompted detection: every matching object with its mask, box and score, best first."""
    text = check_text(text, settings)
    pil, detections = await _detect_text(settings, models, image, text, confidence)
    masks = await anyio.to_thread.run_sync(lambda: [mask_to_b64png(d.mask) for d in detections])
    objects = [DetectedObject(mask=m, bbox=d.box, score=d.score, label=text) for m, d in zip(masks, detections)]
    return DetectResponse(objects=objects, count=len(objects), width=pil.size[0], height=pil.size[1])


@router.post("/segment/text", response_model=None, responses={200: {"content": {"image/png": {}}}})
async def segment_text(
    settings: SettingsDep,
    models: ModelsDep,
    image: ImageFile,
    text: Annotated[str, Form(description="what to mask, e.g. 'person'")],
    confidence: Confidence = None,
) -> Response:
    """The union of every detected object's mask, as one PNG (for inpainting)."""
    text = check_text(text, settings)
    pil, detections = await _detect_text(settings, models, image, text, confidence)

    def union_png() -> bytes:
        union = np.zeros((pil.size[1], pil.size[0]), dtype=bool)
        for d in detections:
            union |= d.mask
        return mask_to_png(union)

    png = await anyio.to_thread.run_sync(union_png)
    return Response(png, media_type="image/png", headers={"X-Object-Count": str(len(detections))})
