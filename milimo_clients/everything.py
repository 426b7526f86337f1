"""The answer of ``POST /segment/everything`` (``InpaintingManager.segment_everything``): every object of an
image, largest first, with SAM 2's automatic-mask-generator fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from milimo_clients.masks import HasMask, wire_mask

# SAM 2's SAM2AutomaticMaskGenerator knobs, as the service takes them (form fields of the same names).
EVERYTHING_KNOBS = (
    "points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
    "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio", "crop_n_points_downscale_factor",
    "min_mask_region_area", "multimask_output", "use_m2m",
)  # fmt: skip


@dataclass(frozen=True)
class EverythingObject(HasMask):
    """One object. ``mask`` is PNG bytes (0/255, image size) or a COCO RLE dict (``mask_format="rle"``)."""

    mask: bytes | dict = field(repr=False)
    bbox: tuple[int, int, int, int]  # pixel x0, y0, x1, y1 (the mask's first and last column and row)
    area: int
    predicted_iou: float
    stability_score: float
    point: tuple[float, float]  # the grid click that made it
    crop_box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) of its crop


@dataclass(frozen=True)
class EverythingResult:
    """``/segment/everything`` answer: objects sorted by area, largest first."""

    objects: list[EverythingObject]
    count: int
    width: int
    height: int
    image_id: str | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> EverythingResult:
        objects = [
            EverythingObject(
                mask=wire_mask(o["mask"]),
                bbox=tuple(int(v) for v in o["bbox"]),
                area=int(o["area"]),
                predicted_iou=float(o["predicted_iou"]),
                stability_score=float(o["stability_score"]),
                point=tuple(float(v) for v in o["point_coords"][0]),
                crop_box=tuple(int(v) for v in o["crop_box"]),
            )
            for o in body["objects"]
        ]
        return cls(objects, int(body["count"]), int(body["width"]), int(body["height"]), body.get("image_id"))
