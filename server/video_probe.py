"""Checks on ``/track/start``'s ``video_path`` before any model work: media roots, existence, readability.

Order matters: the media-root check (403) comes first, so the service says nothing about files outside
the allowed folders, not even whether they exist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from server.errors import BadValue, Forbidden, TooLarge, UnsupportedMedia

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
FIELD = "video_path"


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    num_frames: int
    width: int
    height: int
    fps: float | None


def resolve_in_roots(video_path: str, roots: tuple[Path, ...]) -> Path:
    """The real path of ``video_path`` (symlinks and ``..`` resolved) if it lies inside one of ``roots``; else 403."""
    if "\x00" in video_path:
        raise BadValue(f"{FIELD}: contains a NUL byte")
    path = Path(video_path).expanduser().resolve()
    for root in roots:
        if path == root or path.is_relative_to(root):
            return path
    allowed = os.pathsep.join(str(r) for r in roots)
    raise Forbidden(f"{FIELD}: {video_path!r} is outside the allowed media roots ({allowed}; set SAM_MEDIA_ROOTS)")


def probe_media(path: Path, *, max_frames: int) -> MediaInfo:
    """Frame count, size and fps of a video file or a folder of frames (400 / 413 / 415 on problems)."""
    if not path.exists():
        raise BadValue(f"{FIELD}: no such file or folder: {path}")
    info = _probe_folder(path) if path.is_dir() else _probe_file(path)
    if info.num_frames > max_frames:
        raise TooLarge(f"{FIELD}: {info.num_frames} frames, over the {max_frames} frame limit (SAM_MAX_VIDEO_FRAMES)")
    return info


def _frame_key(p: Path) -> tuple:
    return (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.name)


def _probe_folder(path: Path) -> MediaInfo:
    try:
        frames = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS]
        frames.sort(key=_frame_key)
    except OSError as exc:
        raise BadValue(f"{FIELD}: cannot list folder {path}: {exc.strerror or exc}") from None
    if not frames:
        raise UnsupportedMedia(f"{FIELD}: the folder {path} holds no JPEG/PNG frames")
    try:
        with Image.open(frames[0]) as image:
            image.load()
            width, height = image.size
    except Exception as exc:  # PIL signals broken files with many exception types
        raise BadValue(f"{FIELD}: frame {frames[0].name} is unreadable ({type(exc).__name__}: {exc})") from None
    return MediaInfo(path, len(frames), width, height, None)


def _probe_file(path: Path) -> MediaInfo:
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise UnsupportedMedia(
            f"{FIELD}: {path.name!r} is not a supported video ({', '.join(e[1:] for e in VIDEO_EXTENSIONS)}) "
            "or a folder of JPEG/PNG frames"
        )
    import av  # PyAV: imported here so the image routes never pay for it

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise UnsupportedMedia(f"{FIELD}: {path.name} is not a readable video ({exc})") from None
    except OSError as exc:
        raise BadValue(f"{FIELD}: cannot open {path.name}: {exc.strerror or exc}") from None
    with container:
        if not container.streams.video:
            raise UnsupportedMedia(f"{FIELD}: {path.name} has no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else None
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise BadValue(f"{FIELD}: {path.name}: the first frame cannot be decoded ({exc})") from None
        if first is None:
            raise BadValue(f"{FIELD}: {path.name} has no decodable frames")
        width, height = first.width, first.height
        num_frames = stream.frames
        if not num_frames:
            # The container does not say: count the packets (no decoding needed).
            container.seek(0)
            num_frames = sum(1 for packet in container.demux(stream) if packet.size)
    if width <= 0 or height <= 0 or num_frames <= 0:
        raise BadValue(f"{FIELD}: {path.name} has no decodable frames")
    return MediaInfo(path, int(num_frames), int(width), int(height), fps)
