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


class DetectedObject(BaseModel):
    mask: str = Field(description="base64 PNG, 0/255, image size")
    bbox: list[float] = Field(description="pixel [x0, y0, x1, y1]")
    score: float
    label: str


class DetectResponse(BaseModel):
    objects: list[DetectedObject]
    count: int
    width: int
    height: int


# --- /track/*


class _Strict(BaseModel):
    """JSON bodies of /track/*: unknown fields and wrong JSON types (``"frame_idx": "0"``) are a 422."""

    model_config = ConfigDict(extra="forbid", strict=True)


class TrackStartRequest(_Strict):
    video_path: str = Field(min_length=1)
    session_id: str | None = Field(None, pattern=SESSION_ID_PATTERN)


class TrackStartResponse(BaseModel):
    session_id: str
    num_frames: int
    width: int
    height: int
    fps: float | None


class TrackPromptRequest(_Strict):
    session_id: str = Field(min_length=1)
    frame_idx: int = Field(ge=0)
    text: str | None = None
    points: list | None = None  # pixel [x, y] pairs; checked by server.prompts
    labels: list | None = None
    boxes: list | None = None  # normalised [cx, cy, w, h] (or a list of them)
    obj_id: int | None = Field(None, ge=0)


class TrackFrame(BaseModel):
    frame_idx: int
    object_ids: list[int]
    scores: list[float]
    masks: list[str]
    boxes: list[list[float]]


class TrackPromptResponse(TrackFrame):
    num_objects: int


class TrackPropagateRequest(_Strict):
    session_id: str = Field(min_length=1)
    direction: Literal["forward", "backward", "both"] = "both"
    start_frame: int | None = Field(None, ge=0)
    max_frames: int = Field(-1, ge=-1)


class TrackPropagateResponse(BaseModel):
    session_id: str
    direction: str
    num_frames_processed: int
    frames: list[TrackFrame]


class TrackStopRequest(_Strict):
    session_id: str = Field(min_length=1)


class TrackStopResponse(BaseModel):
    session_id: str
    closed: bool
