"""``POST /track/export``: the stored masks of a session as a zip of PNGs, a COCO-RLE JSON or matte videos,
streamed with a ``Content-Disposition`` file name (``server.services.exporter`` writes them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import anyio
import numpy as np
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from server.dependencies import TrackingDep
from server.errors import BadValue, Conflict
from server.services.exporter import ExportFormat, ExportPlan, file_name, media_type, write_export
from server.services.video_sessions import frame_to_wire

router = APIRouter(prefix="/track", tags=["track"])
CHUNK = 256 * 1024
MAX_OBJ_IDS = 1000


class TrackExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(min_length=1, max_length=128)
    format: ExportFormat
    obj_ids: list[int] | None = Field(None, max_length=MAX_OBJ_IDS, description="default: every object")
    start: int = Field(0, ge=0, description="first frame (inclusive)")
    end: int | None = Field(None, ge=0, description="last frame (inclusive); default: the last frame")


EXPORT_DOC = {
    200: {
        "description": "the file, with a Content-Disposition file name",
        "content": {"application/zip": {}, "application/json": {}, "video/mp4": {}},
    }
}


def _chunks(fh: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := fh.read(CHUNK):
            yield chunk
    finally:
        fh.close()


@router.post("/export", response_class=StreamingResponse, responses=EXPORT_DOC)
async def export(body: TrackExportRequest, tracking: TrackingDep) -> StreamingResponse:
    """Export the computed results of a session (nothing is recomputed)."""
    async with tracking.use(body.session_id, exclusive=False) as session:
        video = session.video
        last = video.num_frames - 1
        if body.start > last:
            raise BadValue(f"start: {body.start} is out of range; the video has {video.num_frames} frames")
        end = last if body.end is None else min(body.end, last)
        if end < body.start:
            raise BadValue(f"end: {body.end} is before start {body.start}")
        predictor = await tracking.ensure_predictor()
        computed = predictor.computed_frames(video, body.start, end)
        present = predictor.objects_in(video, computed)
        if not computed:
            raise Conflict(
                f"session_id: no computed frames in {body.start}..{end} to export; prompt and propagate first"
            )
        if body.obj_ids is not None:
            unknown = sorted(set(body.obj_ids) - set(present))
            if unknown:
                raise BadValue(f"obj_ids: no object {unknown[:10]} in this session (objects: {present[:50]})")
        obj_ids = sorted(set(body.obj_ids)) if body.obj_ids is not None else present
        if not obj_ids:
            raise Conflict("session_id: the session has no objects to export")

        def read(t: int) -> dict[int, np.ndarray]:
            result = predictor.frame_result(video, t)
            if result is None:
                return {}
            return {int(i): m for i, m in zip(result.obj_ids, result.masks)}

        def read_wire(t: int) -> dict:
            result = predictor.frame_result(video, t)
            return frame_to_wire(result, "rle") if result is not None else {"frame_idx": t, "object_ids": []}

        plan = ExportPlan(
            session.session_id,
            video.height,
            video.width,
            video.fps,
            body.start,
            end,
            computed,
            obj_ids,
            read,
            read_wire,
        )
        fh = await anyio.to_thread.run_sync(write_export, plan, body.format)
    name = file_name(plan, body.format)
    return StreamingResponse(
        _chunks(fh),
        media_type=media_type(plan, body.format),
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )
