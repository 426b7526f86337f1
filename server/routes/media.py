"""What the web page needs to browse videos: GET /media/videos (the videos and frame folders under the media
roots) and GET /media/frame (one decoded frame as JPEG).

Both stay inside ``SAM_MEDIA_ROOTS`` exactly as ``/track/start`` does: every listed entry is resolved and
checked against the roots (a symlink that leaves them is skipped), and ``/media/frame`` reads through the
tracker's own loader checks (``sam3.inference.video_io``: ``resolve_media_path``, ``open_regular``,
``read_frame_file``, the size limits), its failures reported as ``/track/start`` reports them.
"""

from __future__ import annotations

import io
import itertools
import os
from pathlib import Path
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Query
from fastapi.responses import Response
from PIL import Image
from pydantic import BaseModel

from server.dependencies import SettingsDep
from server.errors import BadValue
from server.services.tracking_service import video_error
from server.settings import Settings
from sam3.inference.media_paths import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    VideoReadError,
    VideoUnsupported,
    list_frame_files,
    open_regular,
    resolve_media_path,
)
from sam3.inference.video_io import VideoLimits, read_frame_file

router = APIRouter(prefix="/media", tags=["media"])

# Bounds of the walk: a media root may be a home folder with a million files.
MAX_DEPTH = 4
MAX_ITEMS = 500
MAX_ENTRIES_SCANNED = 20_000
MAX_FRAME_INDEX = 2**31 - 1


class MediaItem(BaseModel):
    path: str  # absolute, resolved: what /track/start's video_path takes
    name: str  # relative to its root, for display
    kind: Literal["video", "frames"]
    root: str


class MediaList(BaseModel):
    roots: list[str]
    items: list[MediaItem]
    truncated: bool  # the walk hit MAX_ITEMS or MAX_ENTRIES_SCANNED


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    try:
        resolve_media_path(path, roots)
    except VideoReadError:  # outside the roots, or not resolvable (a loop): not listed
        return False
    return True


def _holds_frames(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_EXTS for e in entries)
    except OSError:
        return False


def list_media(roots: tuple[Path, ...]) -> MediaList:
    """Videos and frame folders under ``roots``, breadth first, hidden entries skipped, bounded in depth and count."""
    items: list[MediaItem] = []
    seen: set[Path] = set()
    scanned = 0
    truncated = False
    for root in roots:
        queue: list[tuple[Path, int]] = [(root, 0)]  # folders as listed (under root), with their depth
        while queue and not truncated:
            folder, depth = queue.pop(0)
            real_folder = folder.resolve()
            if real_folder in seen:  # a symlink loop, or a folder reached twice
                continue
            seen.add(real_folder)
            if folder != root and _holds_frames(real_folder):
                items.append(
                    MediaItem(path=str(real_folder), name=str(folder.relative_to(root)), kind="frames", root=str(root))
                )
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                scanned += 1
                if len(items) >= MAX_ITEMS or scanned > MAX_ENTRIES_SCANNED:
                    truncated = True
                    break
                if entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                real = path.resolve()
                if not _inside(real, roots):  # a symlink that leaves the roots
                    continue
                if real.is_dir():
                    if depth + 1 <= MAX_DEPTH:
                        queue.append((path, depth + 1))
                elif real.is_file() and real.suffix.lower() in VIDEO_EXTS:
                    items.append(
                        MediaItem(path=str(real), name=str(path.relative_to(root)), kind="video", root=str(root))
                    )
    return MediaList(roots=[str(r) for r in roots], items=items, truncated=truncated)


def _limits(settings: Settings) -> VideoLimits:
    return VideoLimits(
        max_frames=settings.max_video_frames, max_side=settings.max_video_side, max_pixels=settings.max_video_pixels
    )


def _read_frame(path: Path, index: int, roots: tuple[Path, ...], limits: VideoLimits) -> Image.Image:
    """Frame ``index`` of a video file or frame folder, in the order the tracker's loader reads them, with the
    loader's own checks (roots for every file opened, frame count and size limits)."""
    if path.is_dir():
        files = list_frame_files(path, limits.max_frames)
        if not files:
            raise VideoUnsupported(f"the folder {path.name} holds no JPEG/PNG frames")
        if index >= len(files):
            raise BadValue(f"frame_idx: {index} is past the last frame ({len(files) - 1})")
        return read_frame_file(files[index], roots, limits).convert("RGB")
    if path.suffix.lower() not in VIDEO_EXTS:
        raise VideoUnsupported(f"{path.name!r} is not a video file or a folder of JPEG/PNG frames")
    import av

    try:
        with open_regular(path, roots, path.name) as fh, av.open(fh) as container:
            if not container.streams.video:
                raise VideoUnsupported(f"{path.name} has no video stream")
            # Decoded in presentation order, as the loader counts frames, so frame i here is frame i there.
            frame = next(itertools.islice(container.decode(video=0), index, None), None)
            if frame is None:
                raise BadValue(f"frame_idx: {index} is past the last frame of {path.name}")
            limits.check_size(frame.width, frame.height, f"{path.name} frame {index}")
            return frame.to_image()
    except av.error.FFmpegError as exc:
        raise VideoUnsupported(f"{path.name} is not a readable video ({type(exc).__name__})") from None


@router.get("/videos", response_model=MediaList)
async def videos(settings: SettingsDep) -> MediaList:
    """Video files and folders of JPEG/PNG frames under the media roots (``SAM_MEDIA_ROOTS``)."""
    return await anyio.to_thread.run_sync(list_media, settings.media_root_paths)


@router.get("/frame", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
async def frame(
    settings: SettingsDep,
    video_path: Annotated[str, Query(min_length=1, max_length=4096, description="as for /track/start")],
    frame_idx: Annotated[int, Query(ge=0, le=MAX_FRAME_INDEX)] = 0,
) -> Response:
    """One decoded frame of a video file or frame folder inside the media roots, as JPEG."""
    roots = settings.media_root_paths

    def encode() -> bytes:
        try:
            path = resolve_media_path(video_path, roots)  # the roots first: nothing said about other paths
            if not os.path.exists(path):
                raise VideoReadError(f"no such file or folder: {video_path[:300]}")
            image = _read_frame(path, frame_idx, roots, _limits(settings))
        except VideoReadError as exc:
            raise video_error(exc) from None
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=88)
        return buffer.getvalue()

    jpeg = await anyio.to_thread.run_sync(encode)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})
