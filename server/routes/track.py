"""Video tracking endpoints (JSON bodies): POST /track/start, /track/prompt, /track/propagate, /track/stop."""

from __future__ import annotations

import anyio
from fastapi import APIRouter

from server.dependencies import SettingsDep, TrackingDep
from server.errors import BadValue, Unprocessable
from server.prompts import validate_boxes, validate_labels, validate_points
from server.schemas import (
    TrackPromptRequest,
    TrackPromptResponse,
    TrackPropagateRequest,
    TrackPropagateResponse,
    TrackStartRequest,
    TrackStartResponse,
    TrackStopRequest,
    TrackStopResponse,
)
from server.services.tracking_service import FramePrompt
from server.video_probe import probe_media, resolve_in_roots

router = APIRouter(prefix="/track", tags=["track"])


@router.post("/start", response_model=TrackStartResponse)
async def start(body: TrackStartRequest, settings: SettingsDep, tracking: TrackingDep) -> TrackStartResponse:
    """Open a session on a video file or a folder of frames inside the media roots."""
    path = resolve_in_roots(body.video_path, settings.media_root_paths)
    media = await anyio.to_thread.run_sync(lambda: probe_media(path, max_frames=settings.max_video_frames))
    session = await tracking.start(media, body.session_id)
    m = session.media
    return TrackStartResponse(
        session_id=session.session_id, num_frames=m.num_frames, width=m.width, height=m.height, fps=m.fps
    )


@router.post("/prompt", response_model=TrackPromptResponse)
async def prompt(body: TrackPromptRequest, settings: SettingsDep, tracking: TrackingDep) -> TrackPromptResponse:
    """Add a text / point / box prompt on one frame; returns that frame's objects."""
    session = tracking.get(body.session_id)
    media = session.media
    text = body.text.strip() if body.text is not None else None
    if text is not None and len(text) > settings.max_text_length:
        raise Unprocessable(
            f"text: {len(text)} characters, at most {settings.max_text_length} allowed (SAM_MAX_TEXT_LENGTH)"
        )
    if not text and body.points is None and body.boxes is None:
        raise BadValue("text: give at least one of text, points or boxes")
    points = (
        validate_points(body.points, width=media.width, height=media.height, max_points=settings.max_points)
        if body.points is not None
        else None
    )
    if points is None and body.labels is not None:
        raise BadValue("labels: labels given without points")
    labels = validate_labels(body.labels, len(points)) if points is not None else None
    boxes = validate_boxes(body.boxes, max_boxes=1) if body.boxes is not None else None
    if points is not None and (text or boxes):
        raise BadValue("points: send clicks in their own prompt, not together with text or boxes")
    frame_prompt = FramePrompt(body.frame_idx, text or None, points, labels, boxes, body.obj_id)
    frame = await tracking.add_prompt(body.session_id, frame_prompt)
    return TrackPromptResponse(**frame)


@router.post("/propagate", response_model=TrackPropagateResponse)
async def propagate(body: TrackPropagateRequest, tracking: TrackingDep) -> TrackPropagateResponse:
    """Track the prompted objects through the video; every processed frame, in frame order."""
    frames = await tracking.propagate(body.session_id, body.direction, body.start_frame, body.max_frames)
    return TrackPropagateResponse(
        session_id=body.session_id, direction=body.direction, num_frames_processed=len(frames), frames=frames
    )


@router.post("/stop", response_model=TrackStopResponse)
async def stop(body: TrackStopRequest, tracking: TrackingDep) -> TrackStopResponse:
    """Close a session and free its memory; an unknown or closed session answers ``closed: false``."""
    closed = await tracking.stop(body.session_id)
    return TrackStopResponse(session_id=body.session_id, closed=closed)
