"""What the web page needs to browse videos: GET /media/videos (the videos and frame folders under the media
roots) and GET /media/frame (one decoded frame as JPEG).

Both stay inside ``SAM_MEDIA_ROOTS`` exactly as ``/track/start`` does: every listed entry is resolved and
checked against the roots (a symlink that leaves them is skipped; one that cannot be resolved or named is
skipped and logged), and ``/media/frame`` reads through the tracker's own video source and checks
(``server.services.frame_previews``), its failures reported as ``/track/start`` reports them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel

from server.dependencies import SettingsDep, TrackingDep
from sam3.inference.media_paths import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    VideoReadError,
    resolve_media_path,
)

router = APIRouter(prefix="/media", tags=["media"])
log = logging.getLogger("sam3.server")

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


def _inside(path: Path, roots: tuple[Path, ...]) -> Path | None:
    """The real path when it lies inside the roots, else None (outside, or not resolvable)."""
    try:
        return resolve_media_path(path, roots)
    except VideoReadError:
        return None


def _holds_frames(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_EXTS for e in entries)
    except OSError:
        return False


def _printable(name: str) -> bool:
    """A name the JSON answer can carry: one that is not valid UTF-8 holds surrogates (PEP 383)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Walk:
    """One breadth-first listing: what it found, and what it skipped (logged once at the end)."""

    def __init__(self, roots: tuple[Path, ...]):
        self.roots = roots
        self.items: list[MediaItem] = []
        self.seen: set[Path] = set()
        self.scanned = 0
        self.truncated = False
        self.skipped: list[str] = []

    def root(self, root: Path) -> None:
        queue: list[tuple[Path, int]] = [(root, 0)]  # folders as listed (under root), with their depth
        while queue and not self.truncated:
            folder, depth = queue.pop(0)
            real_folder = _inside(folder, self.roots)
            if real_folder is None or real_folder in self.seen:  # a symlink loop, or a folder reached twice
                continue
            self.seen.add(real_folder)
            if folder != root and _printable(str(real_folder)) and _holds_frames(real_folder):
                self.items.append(
                    MediaItem(path=str(real_folder), name=str(folder.relative_to(root)), kind="frames", root=str(root))
                )
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                self.scanned += 1
                if len(self.items) >= MAX_ITEMS or self.scanned > MAX_ENTRIES_SCANNED:
                    self.truncated = True
                    break
                if entry.name.startswith("."):
                    continue
                try:
                    self.entry(root, Path(entry.path), depth, queue)
                except (OSError, RuntimeError, ValueError) as exc:  # a loop, an unreadable entry...
                    self.skip(entry.path, type(exc).__name__)

    def entry(self, root: Path, path: Path, depth: int, queue: list[tuple[Path, int]]) -> None:
        if not _printable(str(path)):
            self.skip(str(path), "not valid UTF-8")
            return
        real = _inside(path, self.roots)
        if real is None:  # a symlink that leaves the roots
            return
        if real.is_dir():
            if depth + 1 <= MAX_DEPTH:
                queue.append((path, depth + 1))
        elif real.is_file() and real.suffix.lower() in VIDEO_EXTS and _printable(str(real)):
            self.items.append(MediaItem(path=str(real), name=str(path.relative_to(root)), kind="video", root=str(root)))

    def skip(self, path: str, why: str) -> None:
        self.skipped.append(f"{path!r} ({why})")


def list_media(roots: tuple[Path, ...]) -> MediaList:
    """Videos and frame folders under ``roots``, breadth first, hidden entries skipped, bounded in depth and count.

    An entry that cannot be resolved (a symlink loop, an unreadable folder) or named in JSON (a name that is
    not valid UTF-8) is skipped and logged, never an error of the whole listing."""
    walk = _Walk(roots)
    for root in roots:
        if not walk.truncated:
            walk.root(root)
    if walk.skipped:
        log.warning(
            "GET /media/videos skipped %d entries it cannot resolve or name, e.g. %s",
            len(walk.skipped),
            ", ".join(walk.skipped[:3]),
        )
    return MediaList(roots=[str(r) for r in roots], items=walk.items, truncated=walk.truncated)


@router.get("/videos", response_model=MediaList)
async def videos(settings: SettingsDep) -> MediaList:
    """Video files and folders of JPEG/PNG frames under the media roots (``SAM_MEDIA_ROOTS``)."""
    return await anyio.to_thread.run_sync(list_media, settings.media_root_paths)


@router.get("/frame", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
async def frame(
    tracking: TrackingDep,
    video_path: Annotated[str, Query(min_length=1, max_length=4096, description="as for /track/start")],
    frame_idx: Annotated[int, Query(ge=0, le=MAX_FRAME_INDEX)] = 0,
) -> Response:
    """One decoded frame of a video file or frame folder inside the media roots, as JPEG: the checks and frame
    limits of ``/track/start``, one unit of work in the service's queue (429 when full)."""
    jpeg = await tracking.previews.jpeg(video_path, frame_idx)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})
