"""Uploaded footage (``POST /media/upload``): a video file, or a zip of JPEG/PNG frames unpacked into a folder,
stored under ``<first media root>/<SAM_UPLOAD_DIR>`` so that ``/track/start`` and ``GET /media/videos`` treat it
like any other media.

Limits, before and while writing: the body limiter stops the upload at ``SAM_MAX_UPLOAD_VIDEO_MB`` (a declared
``Content-Length`` over it is refused before a byte is read); a zip's directory is checked before anything is
unpacked (frame count against ``SAM_MAX_VIDEO_FRAMES``, declared sizes against ``SAM_MAX_UPLOAD_VIDEO_MB``) and
the bytes really unpacked are counted; every frame's header is checked against the frame size limits; a video is
then probed by the tracker's own loader (frames counted in the file, sizes), and anything refused is deleted.

Retention: an upload is deleted ``SAM_UPLOAD_RETENTION_S`` after the last session on it closed (its
modification time is set then), or after it was uploaded when no session opened it (at least
``UNOPENED_GRACE_S``, the time to open it); never while a session uses it. ``0`` deletes it together with its
session.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
import zipfile
from pathlib import Path
from typing import IO

from PIL import Image

from server.errors import BadValue, TooLarge, UnsupportedMedia
from server.settings import Settings

log = logging.getLogger("sam3.server")
COPY_CHUNK = 1024 * 1024
# An upload no session has opened yet is kept at least this long (time to call /track/start), whatever the retention.
UNOPENED_GRACE_S = 60.0
ZIP_EXTS = (".zip",)


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem)[:60].strip("._")
    return stem or "upload"


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class UploadStore:
    """The upload folder, its limits and its retention clock."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.folder = settings.media_root_paths[0] / settings.upload_dir

    # ------------------------------------------------------------------ storing
    def store(self, fh: IO[bytes], filename: str) -> tuple[Path, tuple[int, int, int, float | None]]:
        """Write an uploaded file (already spooled by the multipart parser) into the upload folder and check it;
        returns the stored video file or frame folder and its ``(num_frames, width, height, fps)``. Raises 4xx
        ``ServiceError``s naming ``file``."""
        from sam3.inference.media_paths import IMAGE_EXTS, VIDEO_EXTS

        suffix = Path(filename or "").suffix.lower()
        if suffix not in VIDEO_EXTS and suffix not in ZIP_EXTS:
            raise UnsupportedMedia(
                f"file: {filename[:200]!r} is neither a video ({', '.join(e[1:] for e in VIDEO_EXTS)}) "
                "nor a zip of JPEG/PNG frames"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{uuid.uuid4().hex[:8]}_{_safe_stem(filename)}"
        try:
            if suffix in ZIP_EXTS:
                self._unzip(fh, target, IMAGE_EXTS)
            else:
                target = target.with_suffix(suffix)
                self._copy(fh, target)
            probe = self._probe(target)
        except BaseException:
            self._delete(target)
            raise
        return target, probe

    def _copy(self, fh: IO[bytes], target: Path) -> None:
        limit, written = self.settings.max_upload_video_bytes, 0
        with open(target, "xb") as out:
            while chunk := fh.read(COPY_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise TooLarge(
                        f"file: over the {self.settings.max_upload_video_mb:g} MB upload limit (SAM_MAX_UPLOAD_VIDEO_MB)"
                    )
                out.write(chunk)

    def _unzip(self, fh: IO[bytes], target: Path, image_exts: tuple[str, ...]) -> None:
        s = self.settings
        try:
            archive = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, OSError):
            raise UnsupportedMedia("file: not a readable zip archive") from None
        with archive:
            members = [
                m
                for m in archive.infolist()
                if not m.is_dir()
                and Path(m.filename).suffix.lower() in image_exts
                and not any(p.startswith(".") or p == "__MACOSX" for p in Path(m.filename).parts)
            ]
            # the directory first, before anything is written
            if not members:
                raise UnsupportedMedia("file: the zip holds no JPEG/PNG frames")
            if len(members) > s.max_video_frames:
                raise TooLarge(
                    f"file: the zip holds {len(members)} frames, more than {s.max_video_frames} (SAM_MAX_VIDEO_FRAMES)"
                )
            declared = sum(m.file_size for m in members)
            if declared > s.max_upload_video_bytes:
                raise TooLarge(
                    f"file: the zip's frames unpack to {declared:,} bytes, over the {s.max_upload_video_mb:g} MB "
                    "upload limit (SAM_MAX_UPLOAD_VIDEO_MB)"
                )
            members.sort(key=lambda m: _natural(m.filename))
            target.mkdir()
            unpacked = 0
            for index, member in enumerate(members):
                out_path = target / f"{index:05d}{Path(member.filename).suffix.lower()}"
                with archive.open(member) as src, open(out_path, "xb") as out:
                    while chunk := src.read(COPY_CHUNK):
                        unpacked += len(chunk)
                        if unpacked > s.max_upload_video_bytes:  # sizes in the directory can lie
                            raise TooLarge(
                                f"file: the zip's frames unpack to more than {s.max_upload_video_mb:g} MB "
                                "(SAM_MAX_UPLOAD_VIDEO_MB)"
                            )
                        out.write(chunk)
                self._check_frame(out_path, member.filename)

    def _check_frame(self, path: Path, name: str) -> None:
        from sam3.inference.video_io import VideoLimits

        s = self.settings
        limits = VideoLimits(max_frames=s.max_video_frames, max_side=s.max_video_side, max_pixels=s.max_video_pixels)
        try:
            with Image.open(path) as image:  # the header only
                if image.format not in ("JPEG", "PNG"):
                    raise UnsupportedMedia(f"file: {name[:200]} is not a JPEG or PNG image")
                size = image.size
        except (OSError, Image.DecompressionBombError):
            raise UnsupportedMedia(f"file: {name[:200]} is not a readable image") from None
        self._loader_check(lambda: limits.check_size(size[0], size[1], name[:200]))

    def _probe(self, target: Path) -> tuple[int, int, int, float | None]:
        from sam3.inference.video_io import VideoLimits, probe_video

        s = self.settings
        limits = VideoLimits(max_frames=s.max_video_frames, max_side=s.max_video_side, max_pixels=s.max_video_pixels)
        return self._loader_check(lambda: probe_video(target, limits, s.media_root_paths))

    @staticmethod
    def _loader_check(fn):
        from sam3.inference.media_paths import VideoReadError, VideoTooLarge, VideoUnsupported

        try:
            return fn()
        except VideoTooLarge as exc:
            raise TooLarge(f"file: {exc}") from None
        except VideoUnsupported as exc:
            raise UnsupportedMedia(f"file: {exc}") from None
        except VideoReadError as exc:
            raise BadValue(f"file: {exc}") from None

    # ------------------------------------------------------------------ retention
    def is_upload(self, path: str | os.PathLike) -> bool:
        try:
            return Path(path).resolve().parent == self.folder.resolve()
        except OSError:
            return False

    def session_closed(self, session_id: str, resource_path: str) -> None:
        """A session was freed: start the upload's retention clock (or delete it now with a retention of 0)."""
        if not self.is_upload(resource_path):
            return
        path = Path(resource_path).resolve()
        try:
            if self.settings.upload_retention_s <= 0:
                self._delete(path)
            else:
                os.utime(path)
        except OSError as exc:  # never fail the close
            log.warning("upload %s: %s", path.name, exc)

    def sweep(self, in_use: set[str]) -> list[str]:
        """Delete the uploads past their retention that no open session uses; returns their names."""
        if not self.folder.is_dir():
            return []
        used = {Path(p).resolve() for p in in_use}
        now, removed = time.time(), []
        # with a retention of 0 the session's close deletes its upload (session_closed); the sweep still leaves
        # a fresh upload the time to be opened
        keep_s = max(self.settings.upload_retention_s, UNOPENED_GRACE_S)
        for entry in list(self.folder.iterdir()):
            try:
                if entry.resolve() in used or now - entry.stat().st_mtime <= keep_s:
                    continue
            except OSError:
                continue
            self._delete(entry)
            removed.append(entry.name)
        if removed:
            log.info("uploads removed after %.0f s: %s", self.settings.upload_retention_s, ", ".join(removed))
        return removed

    @staticmethod
    def _delete(path: Path) -> None:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        except OSError as exc:
            log.warning("could not delete upload %s: %s", path.name, exc)
