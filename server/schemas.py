"""Request and response bodies of the wire contract (``service-contract.md``), as pydantic models.

Field names and shapes here ARE the contract; extension fields are marked as such.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"


class Health(BaseModel):
    status: Literal["running"] = "running"
    model_loaded: bool
    processor_ready: bool
    device: str
    video_predictor_loaded: bool
    error: str | None
    # The precision in use after "auto" was resolved (fp32 | bf16 | fp16 | int8); null until the model loaded.
    precision: str | None = None
    # SAM3_MODEL_VERSION: sam3 | sam3.1 (service-contract.md, "Extensions (third round)")
    model_version: str = "sam3"
    # Extensions (not in the contract; clients must not depend on them)
    loading: bool = False
    preset: str
    random_weights: bool
    backbone_runs: int = 0
    image_cache: dict | None = None
    active_sessions: int = 0
    video_predictor_error: str | None = None
    note: str | None = None  # what a person will see (development mode: random weights)


class MultiMaskResponse(BaseModel):
    masks: list[str] = Field(description="base64 PNG masks, best first")
    scores: list[float]
    # Extensions (service-contract.md, "Extensions")
    image_id: str | None = Field(None, description="feature-cache key of the image: send it instead of the image")
    refined: bool | None = Field(None, description="with object_id: whether the object's previous mask was the input")
    low_res_logits: list[str] | None = Field(
        None, description="with return_logits: base64 of little-endian float32 (H, W) logits per mask, best first"
    )
    logits_shape: list[int] | None = Field(None, description="(H, W) of each low_res_logits entry")


class DetectedObject(BaseModel):
    mask: str | dict = Field(description="base64 PNG, 0/255, image size; or COCO RLE with mask_format=rle")
    bbox: list[float] = Field(description="pixel [x0, y0, x1, y1]")
    score: float
    label: str
    prompt_index: int = Field(0, description="index into texts (0 for text or an exemplar-only prompt)")


class PromptSummary(BaseModel):
    """Extension: one concept prompt of a /detect request."""

    index: int
    text: str | None = Field(description="the text, or null for exemplar boxes alone")
    num_boxes: int
    confidence: float
    count: int = Field(description="objects this prompt found")


class DetectResponse(BaseModel):
    objects: list[DetectedObject]
    count: int
    width: int
    height: int
    # Extensions (service-contract.md, "Extensions")
    image_id: str | None = None
    prompts: list[PromptSummary] = []


# --- /track/*

MAX_INDEX = 2**31 - 1  # frame indices, frame counts and object ids: checked at the edge, never overflow later

TrackMaskFormat = Literal["png", "rle"]


class _Strict(BaseModel):
    """JSON bodies of /track/*: unknown fields and wrong JSON types (``"frame_idx": "0"``) are a 422."""

    model_config = ConfigDict(extra="forbid", strict=True)


class RleMask(BaseModel):
    """COCO run-length encoding as ``pycocotools.mask.encode`` writes it (column-major)."""

    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="compressed counts (UTF-8 text)")


class TrackStartRequest(_Strict):
    video_path: str = Field(min_length=1, max_length=4096)
    session_id: str | None = Field(None, pattern=SESSION_ID_PATTERN)


class TrackStartResponse(BaseModel):
    session_id: str
    num_frames: int
    width: int
    height: int
    fps: float | None


class TrackPromptRequest(_Strict):
    session_id: str = Field(min_length=1, max_length=128)
    frame_idx: int = Field(ge=0, le=MAX_INDEX)
    text: str | None = None
    points: list | None = None  # pixel [x, y] pairs; checked by server.prompts
    labels: list | None = None
    boxes: list | None = None  # normalised [cx, cy, w, h] (or a list of them)
    box_labels: list | None = None  # extension: 1 positive / 0 negative exemplar, one per box
    obj_id: int | None = Field(None, ge=0, le=MAX_INDEX)
    mask_format: TrackMaskFormat = "png"


class TrackFrame(BaseModel):
    frame_idx: int
    object_ids: list[int]
    scores: list[float]
    masks: list[str | RleMask] = Field(description="base64 PNG (mask_format png) or COCO RLE (rle)")
    boxes: list[list[float]]


class TrackPromptResponse(TrackFrame):
    num_objects: int


class TrackPropagateRequest(_Strict):
    session_id: str = Field(min_length=1, max_length=128)
    direction: Literal["forward", "backward", "both"] = "both"
    start_frame: int | None = Field(None, ge=0, le=MAX_INDEX)
    max_frames: int = Field(-1, ge=-1, le=MAX_INDEX)
    mask_format: TrackMaskFormat = "png"
    stream: bool = Field(False, description="answer application/x-ndjson, one line per event, as frames are computed")


class RemovedObject(BaseModel):
    obj_id: int
    rule: str  # "hotstart_unmatched" | "hotstart_duplicate"
    frame_idx: int  # where the rule's count was reached
    frames: list[int]  # the frames it counted
    duplicate_of: int | None
    detail: str  # a sentence for people


class TrackPropagateResponse(BaseModel):
    session_id: str
    direction: str
    num_frames_processed: int
    frames: list[TrackFrame]
    # extension: objects a detect-then-track rule removed during this propagation, and why
    removed_objects: list[RemovedObject] = []


class TrackStopRequest(_Strict):
    session_id: str = Field(min_length=1, max_length=128)


class TrackStopResponse(BaseModel):
    session_id: str
    closed: bool


class TrackCancelRequest(_Strict):
    session_id: str = Field(min_length=1, max_length=128)


class TrackCancelResponse(BaseModel):
    session_id: str
    cancelled: bool


class TrackFramesRequest(_Strict):
    session_id: str = Field(min_length=1, max_length=128)
    start: int = Field(0, ge=0, le=MAX_INDEX)
    end: int | None = Field(None, ge=0, le=MAX_INDEX, description="last frame, inclusive (default: the last)")
    mask_format: TrackMaskFormat = "png"


class TrackFramesResponse(BaseModel):
    session_id: str
    frames: list[TrackFrame]


class TrackRemoveObjectRequest(_Strict):
    session_id: str = Field(min_length=1, max_length=128)
    obj_id: int = Field(ge=0, le=MAX_INDEX)


class TrackRemoveObjectResponse(BaseModel):
    session_id: str
    removed: bool


class TrackResetRequest(_Strict):
    session_id: str = Field(min_length=1, max_length=128)


class TrackResetResponse(BaseModel):
    session_id: str
    reset: bool


# --- /segment/everything (service-contract.md, "Extensions (third round)")


class EverythingObject(BaseModel):
    mask: str | dict = Field(description="base64 PNG, 0/255, image size; or COCO RLE with mask_format=rle")
    bbox: list[int] = Field(description="pixel [x0, y0, x1, y1]: the mask's first and last column and row")
    area: int = Field(description="pixels in the mask")
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]] = Field(description="[[x, y]]: the grid click that made the mask")
    crop_box: list[int] = Field(description="pixel [x0, y0, x1, y1] (x1, y1 exclusive) of the crop it came from")


class EverythingResponse(BaseModel):
    objects: list[EverythingObject] = Field(description="largest first")
    count: int
    width: int
    height: int
    image_id: str
