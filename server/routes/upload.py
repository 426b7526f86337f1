"""``POST /media/upload``: bring footage in from the page or over HTTP (``server.services.upload_store``)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, File, Request, UploadFile
from pydantic import BaseModel

from server.dependencies import SettingsDep
from server.services.upload_store import UploadStore

router = APIRouter(prefix="/media", tags=["media"])


class UploadResponse(BaseModel):
    video_path: str  # inside the media roots: give it to /track/start
    num_frames: int
    width: int
    height: int
    fps: float | None
    kind: str  # "video" or "frames" (extension)
    retention_s: float  # SAM_UPLOAD_RETENTION_S (extension)


def upload_store(request: Request) -> UploadStore:
    """The app's upload store (made on first use)."""
    store = getattr(request.app.state, "uploads", None)
    if store is None:
        store = request.app.state.uploads = UploadStore(request.app.state.settings)
    return store


@router.post("/upload", response_model=UploadResponse)
async def upload(
    request: Request,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="a video file, or a zip of JPEG/PNG frames")],
) -> UploadResponse:
    """Store an uploaded video (or zip of frames) under the media roots, checked against the upload and frame
    limits (413 naming the limit), and answer what ``/track/start`` will see."""
    store = upload_store(request)
    path, (num_frames, width, height, fps) = await anyio.to_thread.run_sync(store.store, file.file, file.filename or "")
    return UploadResponse(
        video_path=str(path),
        num_frames=num_frames,
        width=width,
        height=height,
        fps=fps,
        kind="frames" if path.is_dir() else "video",
        retention_s=settings.upload_retention_s,
    )
