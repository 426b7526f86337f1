"""Video tracking endpoints (JSON bodies): /track/start, /prompt, /propagate (JSON or streamed NDJSON),
/cancel, /frames, /remove_object, /reset, /stop.

The routes check the wire shape (fields, ranges, points inside the frame); the predictor checks the meaning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import APIRouter

from server.dependencies import SettingsDep, TrackingDep
from server.errors import BadValue, ServiceError, Unprocessable
from server.prompts import validate_boxes, validate_labels, validate_points
from server.schemas import (
    TrackCancelRequest,
    TrackCancelResponse,
    TrackFramesRequest,
    TrackFramesResponse,
    TrackPromptRequest,
    TrackPromptResponse,
    TrackPropagateRequest,
    TrackPropagateResponse,
    TrackRemoveObjectRequest,
    TrackRemoveObjectResponse,
    TrackResetRequest,
    TrackResetResponse,
    TrackStartRequest,
    TrackStartResponse,
    TrackStopRequest,
    TrackStopResponse,
)
from server.services.removals import removals_since, removed_ids
from server.services.tracking_service import TrackingService
from server.services.video_sessions import FramePrompt
from server.stream_sender import BoundedStreamingResponse

router = APIRouter(prefix="/track", tags=["track"])
log = logging.getLogger("sam3.server")

NDJSON = "application/x-ndjson"
# Frames a streamed propagation may compute ahead of its reader (server.stream_sender).
STREAM_BUFFER_FRAMES = 4
STREAM_DOC = {
    200: {
        "description": 'JSON, or with `"stream": true` NDJSON lines: `{"event": "start", "session_id", "total"}`, '
        'then `{"event": "frame", "done", "total", <frame>}` per frame, last `{"event": "end", '
        '"num_frames_processed", "cancelled"}` or `{"event": "error", "status", "detail"}`',
        "content": {NDJSON: {"schema": {"type": "string"}}},
    }
}


@router.post("/start", response_model=TrackStartResponse)
async def start(body: TrackStartRequest, tracking: TrackingDep) -> TrackStartResponse:
    """Open a session on a video file or a folder of frames inside the media roots (frames are decoded later,
    when they are needed)."""
    session = await tracking.start(body.video_path, body.session_id)
    v = session.video
    return TrackStartResponse(
        session_id=session.session_id, num_frames=v.num_frames, width=v.width, height=v.height, fps=v.fps
    )


@router.post("/prompt", response_model=TrackPromptResponse)
async def prompt(body: TrackPromptRequest, settings: SettingsDep, tracking: TrackingDep) -> TrackPromptResponse:
    """Add a text / point / box prompt on one frame; returns that frame's objects."""
    video = tracking.get(body.session_id).video
    text = body.text.strip() if body.text is not None else None
    if text is not None and len(text) > settings.max_text_length:
        raise Unprocessable(
            f"text: {len(text)} characters, at most {settings.max_text_length} allowed (SAM_MAX_TEXT_LENGTH)"
        )
    if not text and body.points is None and body.boxes is None:
        raise BadValue("text: give at least one of text, points or boxes")
    points = (
        validate_points(body.points, width=video.width, height=video.height, max_points=settings.max_points)
        if body.points is not None
        else None
    )
    if points is None and body.labels is not None:
        raise BadValue("labels: labels given without points")
    labels = validate_labels(body.labels, len(points)) if points is not None else None
    boxes = validate_boxes(body.boxes, max_boxes=1) if body.boxes is not None else None
    box_labels = None
    if body.box_labels is not None:
        if boxes is None:
            raise BadValue("box_labels: box_labels given without boxes")
        if len(body.box_labels) != len(boxes) or any(isinstance(v, bool) or v not in (0, 1) for v in body.box_labels):
            raise BadValue(f"box_labels: expected {len(boxes)} label(s), each 1 (positive) or 0 (negative)")
        box_labels = [int(v) for v in body.box_labels]
    if points is not None and (text or boxes):
        raise BadValue("points: send clicks in their own prompt, not together with text or boxes")
    frame_prompt = FramePrompt(body.frame_idx, text or None, points, labels, boxes, box_labels, body.obj_id)
    frame = await tracking.add_prompt(body.session_id, frame_prompt, body.mask_format)
    return TrackPromptResponse(**frame)


@router.post("/propagate", response_model=TrackPropagateResponse, responses=STREAM_DOC)
async def propagate(body: TrackPropagateRequest, settings: SettingsDep, tracking: TrackingDep):
    """Track the prompted objects through the video: every processed frame in frame order, or (``stream``)
    one NDJSON line per frame as soon as it is computed. The model is taken frame by frame.

    A stream runs at most a few frames ahead of its reader and ends when the reader takes no line for
    ``SAM_STREAM_SEND_TIMEOUT_S``; ``/track/cancel`` and ``/track/stop`` act before the next frame whatever
    the reader does."""
    session, prop = await tracking.begin_propagation(body.session_id, body.direction, body.start_frame, body.max_frames)
    before = removed_ids(session)
    if body.stream:
        return BoundedStreamingResponse(
            _ndjson(tracking, session, prop, body, before),
            send_timeout_s=settings.stream_send_timeout_s,
            buffer_chunks=STREAM_BUFFER_FRAMES,
            stop=session.cancelled,
            media_type=NDJSON,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    by_index: dict[int, dict] = {}
    async with aclosing(tracking.run_propagation(session, prop, body.mask_format)) as frames_in:
        async for frame in frames_in:
            by_index[frame["frame_idx"]] = frame
    frames = [by_index[i] for i in sorted(by_index)]
    return TrackPropagateResponse(
        session_id=body.session_id,
        direction=body.direction,
        num_frames_processed=len(frames),
        frames=frames,
        removed_objects=removals_since(session, before, tracking.predictor),
    )


def _line(obj: dict) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


async def _ndjson(
    tracking: TrackingService, session, prop, body: TrackPropagateRequest, before: set[int]
) -> AsyncIterator[bytes]:
    total, done = prop.total, 0
    yield _line({"event": "start", "session_id": body.session_id, "total": total})
    try:
        async with aclosing(tracking.run_propagation(session, prop, body.mask_format)) as frames_in:
            async for frame in frames_in:
                done += 1
                yield _line({"event": "frame", "done": done, "total": total, **frame})
    except ServiceError as exc:
        yield _line({"event": "error", "status": exc.status_code, "detail": exc.detail})
        return
    except Exception:
        log.exception("propagation of session %s failed", body.session_id)
        yield _line(
            {"event": "error", "status": 500, "detail": "internal error during propagation (see the service log)"}
        )
        return
    removed = removals_since(session, before, tracking.predictor)
    yield _line({"event": "end", "num_frames_processed": done, "cancelled": prop.stopped, "removed_objects": removed})


@router.post("/cancel", response_model=TrackCancelResponse)
async def cancel(body: TrackCancelRequest, tracking: TrackingDep) -> TrackCancelResponse:
    """Stop the running propagation of a session before its next frame (frames computed so far stay)."""
    return TrackCancelResponse(session_id=body.session_id, cancelled=tracking.cancel(body.session_id))


@router.post("/frames", response_model=TrackFramesResponse)
async def frames(body: TrackFramesRequest, tracking: TrackingDep) -> TrackFramesResponse:
    """The stored results of the frames already computed in ``start..end`` (inclusive), nothing recomputed."""
    out = await tracking.frames(body.session_id, body.start, body.end, body.mask_format)
    return TrackFramesResponse(session_id=body.session_id, frames=out)


@router.post("/remove_object", response_model=TrackRemoveObjectResponse)
async def remove_object(body: TrackRemoveObjectRequest, tracking: TrackingDep) -> TrackRemoveObjectResponse:
    """Forget one object in every frame; ``removed: false`` when the session has no such object."""
    removed = await tracking.remove_object(body.session_id, body.obj_id)
    return TrackRemoveObjectResponse(session_id=body.session_id, removed=removed)


@router.post("/reset", response_model=TrackResetResponse)
async def reset(body: TrackResetRequest, tracking: TrackingDep) -> TrackResetResponse:
    """Drop every prompt, object and result of the session (the video stays open)."""
    await tracking.reset(body.session_id)
    return TrackResetResponse(session_id=body.session_id, reset=True)


@router.post("/stop", response_model=TrackStopResponse)
async def stop(body: TrackStopRequest, tracking: TrackingDep) -> TrackStopResponse:
    """Close a session and free its memory (a running propagation stops first); an unknown or closed session
    answers ``closed: false``."""
    closed = await tracking.stop(body.session_id)
    return TrackStopResponse(session_id=body.session_id, closed=closed)
