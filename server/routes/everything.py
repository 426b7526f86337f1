"""POST /segment/everything: every object of an image without a prompt (SAM 2's automatic mask generator).

The knobs are SAM 2's ``SAM2AutomaticMaskGenerator`` arguments with its names and defaults
(``sam3.inference.automatic_masks.EverythingConfig``); a malformed value is a 400 naming the field, a value
out of range a 422. Like the other image routes the request queues for the model before its upload is read.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields
from typing import Annotated

import anyio
from fastapi import APIRouter, Form

from server.dependencies import ModelsDep, SettingsDep
from server.errors import BadValue, Unprocessable
from server.image_fields import parse_image_id, parse_mask_format
from server.mask_codec import encode_mask
from server.routes.image import ImageFile, ImageId, image_reader
from server.schemas import EverythingObject, EverythingResponse
from server.services.everything import segment_everything

router = APIRouter(tags=["image"])

_INT = re.compile(r"^[+-]?\d{1,10}$")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")

Knob = lambda text: Annotated[str | None, Form(description=text)]  # noqa: E731


@router.post("/segment/everything", response_model=EverythingResponse)
async def everything(
    settings: SettingsDep,
    models: ModelsDep,
    image: ImageFile = None,
    image_id: ImageId = None,
    points_per_side: Knob("points on each side of the grid (default 32; 1..128)") = None,
    points_per_batch: Knob("points decoded at once (default 64; 1..1024)") = None,
    pred_iou_thresh: Knob("keep masks whose predicted IoU is above this (default 0.8)") = None,
    stability_score_thresh: Knob("keep masks whose stability score is at least this (default 0.95)") = None,
    stability_score_offset: Knob("logit offset of the stability score (default 1.0)") = None,
    box_nms_thresh: Knob("box IoU above which NMS drops the lower-scored mask (default 0.7)") = None,
    crop_n_layers: Knob("crop layers: layer i adds (2^i)^2 crops (default 0; 0..3; needs the image)") = None,
    crop_nms_thresh: Knob("box IoU for NMS across crops (default 0.7)") = None,
    crop_overlap_ratio: Knob("overlap of the first crop layer's crops, a fraction of the short side (0.3413)") = None,
    crop_n_points_downscale_factor: Knob("layer i gets points_per_side / factor^i points a side (default 1)") = None,
    min_mask_region_area: Knob("fill holes and remove specks up to this area in the low-res masks (default 0)") = None,
    multimask_output: Knob("3 masks per point (default true)") = None,
    use_m2m: Knob("refine each mask once with its own logits as the mask prompt (default false)") = None,
    mask_format: Annotated[str | None, Form(description='"png" (base64 PNG, default) or "rle" (COCO RLE)')] = None,
) -> EverythingResponse:
    """Every object of the image: a grid of clicks, decoded in batches, filtered, made unique; largest first."""
    from sam3.inference.automatic_masks import EverythingConfig

    fmt = parse_mask_format(mask_format)
    image_id = parse_image_id(image_id)
    given = dict(locals())  # the knobs arrive as form fields named like EverythingConfig's fields
    knobs = {}
    for f in fields(EverythingConfig):
        raw = given[f.name]
        if raw is not None and raw.strip():
            knobs[f.name] = _parse(f.name, raw.strip(), str(f.type))
    try:
        config = EverythingConfig(**knobs).check()
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None
    read = image_reader(image, image_id, settings)
    result = await segment_everything(models, read, image_id, config)

    def encode() -> list[EverythingObject]:
        return [
            EverythingObject(
                mask=m.rle if fmt == "rle" else encode_mask(m.mask(), "png"),
                bbox=list(m.bbox),
                area=m.area,
                predicted_iou=m.predicted_iou,
                stability_score=m.stability_score,
                point_coords=[list(m.point)],
                crop_box=list(m.crop_box),
            )
            for m in result.masks
        ]

    objects = await anyio.to_thread.run_sync(encode)
    return EverythingResponse(
        objects=objects, count=len(objects), width=result.width, height=result.height, image_id=result.image_id
    )


def _parse(name: str, raw: str, kind: str) -> int | float | bool:
    """One form value as the knob's type; 400 naming the field when it is not one."""
    if kind == "bool":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise BadValue(f"{name}: expected true or false, got {raw[:40]!r}")
    if kind == "int":
        if not _INT.match(raw):
            raise BadValue(f"{name}: expected an integer, got {raw[:40]!r}")
        return int(raw)
    try:
        value = float(raw)
    except ValueError:
        raise BadValue(f"{name}: expected a number, got {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise BadValue(f"{name}: expected a finite number, got {raw[:40]!r}")
    return value
