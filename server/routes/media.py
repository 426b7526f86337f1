"""What the web page needs to browse videos: GET /media/videos (the videos and frame folders under the media
roots) and GET /media/frame (one decoded frame as JPEG).

Both stay inside ``SAM_MEDIA_ROOTS`` exactly as ``/track/start`` does: every listed entry is resolved and
checked against the roots (a symlink that leaves them is skipped), and ``/media/frame`` checks its path with
the loader's own :func:`sam3.inference.video_io.resolve_media_path` before touching the file.
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
from server.errors import BadValue, Forbidden, UnsupportedMedia
from sam3.inference.video_io import IMAGE_EXTS, VIDEO_EXTS, VideoReadError, list_frame_files, resolve_media_path
from server.services.tracking_service import video_error

router = APIRouter(prefix="/media", tags=["media"])

# Bounds of the walk: a media root may be a home folder with a million files.
MAX_DEPTH = 4
MAX_ITEMS = 500
MAX_ENTRIES_SCANNED = 20_000
MAX_FRAME_INDEX = 2**31 - 1


def resolve_in_roots(raw: str, roots: tuple[Path, ...]) -> Path:
    """The resolved path inside the media roots, checked as /track/start checks it (403 / 400 naming video_path)."""
    try:
        return resolve_media_path(raw, roots)
    except VideoReadError as exc:
        raise video_error(exc) from None


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
        resolve_in_roots(str(path), roots)
    except Forbidden:
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
                    items.append(MediaItem(path=str(real), name=str(path.relative_to(root)), kind="video", root=str(root)))
    return MediaList(roots=[str(r) for r in roots], items=items, truncated=truncated)


def _read_frame(path: Path, index: int) -> Image.Image:
    """Frame ``index`` of a video file or frame folder, in the order the tracker's loader reads them."""
    if path.is_dir():
        files = list_frame_files(path)
        if not files:
            raise UnsupportedMedia(f"video_path: the folder {path.name} holds no JPEG/PNG frames")
        if index >= len(files):
            raise BadValue(f"frame_idx: {index} is past the last frame ({len(files) - 1})")
        try:
            with Image.open(files[index]) as image:
                return image.convert("RGB")
        except Exception as exc:  # PIL signals broken files with many exception types
            raise BadValue(f"video_path: frame {files[index].name} is unreadable ({type(exc).__name__})") from None
    if path.suffix.lower() not in VIDEO_EXTS:
        raise UnsupportedMedia(f"video_path: {path.name!r} is not a video file or a folder of frames")
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UnsupportedMedia(f"video_path: {path.name} has no video stream")
            # Decoded in order, as the loader does, so frame i here is frame i of the session.
            frame = next(itertools.islice(container.decode(video=0), index, None), None)
            if frame is None:
                raise BadValue(f"frame_idx: {index} is past the last frame of {path.name}")
            return frame.to_image()
    except av.error.FFmpegError as exc:
        raise UnsupportedMedia(f"video_path: {path.name} is not a readable video ({exc})") from None


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
    try:
        path = resolve_in_roots(video_path, settings.media_root_paths)
        exists = path.exists()
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop, ~nosuchuser
        raise BadValue(f"video_path: cannot resolve {video_path[:200]!r} ({exc})") from None
    if not exists:
        raise BadValue(f"video_path: no such file or folder: {path}")

    def encode() -> bytes:
        buffer = io.BytesIO()
        _read_frame(path, frame_idx).save(buffer, format="JPEG", quality=88)
        return buffer.getvalue()

    jpeg = await anyio.to_thread.run_sync(encode)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})
