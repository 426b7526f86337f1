"""Image endpoints (multipart forms): POST /predict/mask, /detect, /segment/text.

Every request names its image by upload (``image``) or by the ``image_id`` of an earlier answer (the
feature-cache key; 404 once evicted). Cheap fields are parsed before the request queues; the upload is read
and decoded only once the request holds its model slot (``ModelService.run_on_image``).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Annotated

import anyio
import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from server.dependencies import ModelsDep, SettingsDep
from server.errors import BadValue, TooLarge, Unprocessable
from server.image_fields import (
    EXEMPLAR_LABEL,
    parse_concepts,
    parse_confidence,
    parse_image_id,
    parse_mask_format,
    parse_object_id,
    parse_object_indices,
)
from server.mask_codec import encode_mask, mask_to_b64png, mask_to_png
from server.prompts import parse_json_field, validate_boxes
from server.schemas import DetectedObject, DetectResponse, MultiMaskResponse, PromptSummary
from server.services.image_requests import ClickPrompt, Concept, DetectResult
from server.services.model_service import ModelService
from server.settings import Settings

router = APIRouter(tags=["image"])

ImageFile = Annotated[UploadFile | None, File(description="PNG / JPEG / WEBP ... image (or give image_id)")]
ImageId = Annotated[str | None, Form(description="image_id of an earlier answer, instead of the image")]
Confidence = Annotated[
    str | None,
    Form(description="keep objects scoring above this (default SAM3_CONFIDENCE); a JSON list gives one per prompt"),
]
Text = Annotated[str | None, Form(description="what to find, e.g. 'a red car'")]
Texts = Annotated[str | None, Form(description='JSON list of prompts, e.g. ["a red car", "a bike"] (instead of text)')]
Exemplars = Annotated[str | None, Form(description="JSON list of normalised [cx, cy, w, h] exemplar boxes")]
ExemplarLabels = Annotated[str | None, Form(description="JSON list: 1 positive / 0 negative per box (default 1)")]


def image_reader(
    image: UploadFile | None, image_id: str | None, settings: Settings
) -> Callable[[], Awaitable[bytes]] | None:
    """Check that exactly one of ``image`` / ``image_id`` is given; -> a reader of the upload (None for an id).

    The reader is awaited inside the model slot, so a waiting request holds only Starlette's spooled file.
    """
    if image is not None and image_id is not None:
        raise BadValue("image_id: give image or image_id, not both")
    if image is None:
        if image_id is None:
            raise Unprocessable("image: field required (upload the image, or give the image_id of an earlier answer)")
        return None
    if image.size is not None and image.size > settings.max_upload_bytes:
        raise TooLarge(
            f"image: the upload is {image.size / 2**20:.1f} MB, over the {settings.max_upload_mb:g} MB limit "
            "(SAM_MAX_UPLOAD_MB)"
        )

    async def read() -> bytes:
        return await image.read(settings.max_upload_bytes + 1)

    return read


@router.post("/predict/mask", response_model=None, responses={200: {"content": {"image/png": {}}}})
async def predict_mask(
    settings: SettingsDep,
    models: ModelsDep,
    image: ImageFile = None,
    image_id: ImageId = None,
    points: Annotated[str | None, Form(description="JSON list of pixel [x, y] pairs")] = None,
    labels: Annotated[str | None, Form(description="JSON list of 0/1, one per point (default: all 1)")] = None,
    multimask: Annotated[bool, Form(description="return 3 candidates as JSON")] = False,
    boxes: Annotated[str | None, Form(description="JSON [cx, cy, w, h] normalised (or a list with one box)")] = None,
    object_id: Annotated[str | None, Form(description="a name for the object, to refine it later")] = None,
    refine: Annotated[bool, Form(description="use the object's previous mask as the mask input")] = False,
    return_logits: Annotated[bool, Form(description="add the low-resolution logits (JSON answer)")] = False,
) -> Response | MultiMaskResponse:
    """Click / box segmentation with the interactive (SAM-1 task) head; refinable per ``object_id``."""
    # Parse the cheap fields before queueing, so bad JSON costs nothing.
    image_id = parse_image_id(image_id)
    object_id = parse_object_id(object_id)
    if refine and object_id is None:
        raise BadValue("object_id: required with refine=true (the object whose previous mask is refined)")
    raw_points = parse_json_field(points, "points")
    raw_labels = parse_json_field(labels, "labels")
    raw_boxes = parse_json_field(boxes, "boxes")
    box_list = validate_boxes(raw_boxes, max_boxes=1) if raw_boxes is not None else []
    if raw_points is None and not box_list:
        if raw_labels is not None:
            raise BadValue("labels: labels given without points")
        raise BadValue("points: give points (JSON list of [x, y]) or boxes ([cx, cy, w, h]); both are missing")
    read = image_reader(image, image_id, settings)
    prompt = ClickPrompt(raw_points, raw_labels, box_list[0] if box_list else None, multimask, object_id, refine)
    result = await models.predict_mask(read, image_id, prompt)

    headers = {"X-Image-ID": result.image_id}
    if object_id is not None:
        headers["X-Refined"] = "true" if result.refined else "false"
    candidates = result.candidates
    if multimask or return_logits:
        masks = await anyio.to_thread.run_sync(lambda: [mask_to_b64png(c.mask) for c in candidates])
        logits = None
        if return_logits:
            logits = [
                base64.b64encode(np.ascontiguousarray(c.low_res, dtype="<f4").tobytes()).decode() for c in candidates
            ]
        return MultiMaskResponse(
            masks=masks,
            scores=[c.score for c in candidates],
            image_id=result.image_id,
            refined=result.refined if object_id is not None else None,
            low_res_logits=logits,
            logits_shape=list(candidates[0].low_res.shape) if return_logits else None,
        )
    best = candidates[0]
    png = await anyio.to_thread.run_sync(mask_to_png, best.mask)
    return Response(png, media_type="image/png", headers={"X-Mask-Score": f"{best.score:.6f}", **headers})


async def _detect(
    request: Request, settings: Settings, models: ModelService, image, image_id, text, texts, boxes, box_labels,
    confidence, object_indices: list[int] | None = None,
) -> tuple[list[Concept], list[float], DetectResult]:  # fmt: skip
    """Parse the concept fields, then detect (the image decoded inside the model slot)."""
    if text is None and texts is None and "text" in await request.form():
        text = ""  # FastAPI reads an empty optional form field as absent; an empty text is its own error
    image_id = parse_image_id(image_id)
    concepts = parse_concepts(text, texts, boxes, box_labels, settings)
    confidences = parse_confidence(confidence, len(concepts), settings.confidence)
    read = image_reader(image, image_id, settings)
    return concepts, confidences, await models.detect(read, image_id, concepts, confidences, object_indices)


@router.post("/detect", response_model=DetectResponse)
async def detect(
    request: Request,
    settings: SettingsDep,
    models: ModelsDep,
    image: ImageFile = None,
    image_id: ImageId = None,
    text: Text = None,
    texts: Texts = None,
    boxes: Exemplars = None,
    box_labels: ExemplarLabels = None,
    confidence: Confidence = None,
    mask_format: Annotated[str | None, Form(description='"png" (base64 PNG, default) or "rle" (COCO RLE)')] = None,
) -> DetectResponse:
    """Concept detection: every object matching any prompt with its mask, box, score and prompt, best first."""
    fmt = parse_mask_format(mask_format)
    concepts, confidences, result = await _detect(
        request, settings, models, image, image_id, text, texts, boxes, box_labels, confidence
    )
    detections = result.detections
    masks = await anyio.to_thread.run_sync(lambda: [encode_mask(d.mask, fmt) for d in detections])
    labels = [c.text if c.text is not None else EXEMPLAR_LABEL for c in concepts]
    objects = [
        DetectedObject(mask=m, bbox=d.box, score=d.score, label=labels[d.prompt_index], prompt_index=d.prompt_index)
        for m, d in zip(masks, detections)
    ]
    prompts = [
        PromptSummary(index=i, text=c.text, num_boxes=len(c.boxes), confidence=conf, count=n)
        for i, (c, conf, n) in enumerate(zip(concepts, confidences, result.counts))
    ]
    return DetectResponse(
        objects=objects, count=len(objects), width=result.width, height=result.height,
        image_id=result.image_id, prompts=prompts,
    )  # fmt: skip


@router.post("/segment/text", response_model=None, responses={200: {"content": {"image/png": {}}}})
async def segment_text(
    request: Request,
    settings: SettingsDep,
    models: ModelsDep,
    image: ImageFile = None,
    image_id: ImageId = None,
    text: Text = None,
    texts: Texts = None,
    boxes: Exemplars = None,
    box_labels: ExemplarLabels = None,
    confidence: Confidence = None,
    object_indices: Annotated[
        str | None, Form(description="JSON list of indices into /detect's objects (same image, prompts, confidence)")
    ] = None,
) -> Response:
    """The union of the detected objects' masks (all, or the ``object_indices`` selected), as one PNG."""
    indices = parse_object_indices(object_indices)
    _, _, result = await _detect(
        request, settings, models, image, image_id, text, texts, boxes, box_labels, confidence, indices
    )

    def union_png() -> bytes:
        union = np.zeros((result.height, result.width), dtype=bool)
        for d in result.detections:
            union |= d.mask
        return mask_to_png(union)

    png = await anyio.to_thread.run_sync(union_png)
    headers = {"X-Object-Count": str(len(result.detections)), "X-Image-ID": result.image_id}
    return Response(png, media_type="image/png", headers=headers)
