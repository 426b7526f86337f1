"""Media paths: resolving a path against the allowed roots, opening regular files only, listing frame folders.

Everything that reads a video or a frame from a client-given path goes through here, so the root check is
made once, after resolving symlinks and ``..``, before anything is said about the file. The errors are the
ones every video reader raises (:class:`VideoReadError` and its subclasses, mapped to HTTP codes by the
server).

Hostile input: symlinks leading outside the roots, a named pipe, a symlink loop, a name too long for the
file system, ``~nosuchuser/...``, non-ASCII digit names (``int("٣")`` is 3), a hard link to a file outside
the roots (refused with ``refuse_hardlinks``: any file with more than one name): each is a
:class:`VideoReadError` subclass with a message, never a crash or a blocked thread. Paths outside the roots
all get one message (:data:`OUTSIDE_ROOTS`), whatever they are.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

VIDEO_EXTS = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


class VideoReadError(ValueError):
    """The resource is not a readable video or frame folder (the message says why; HTTP 400)."""


class VideoForbidden(VideoReadError):
    """The path, or a file it leads to, lies outside the allowed media roots (HTTP 403)."""


class VideoTooLarge(VideoReadError):
    """Too many frames, or frames too large (HTTP 413)."""


class VideoUnsupported(VideoReadError):
    """Not a video file or a folder of JPEG/PNG frames (HTTP 415)."""


def _inside(path: Path, roots: tuple[Path, ...] | None) -> bool:
    return roots is None or any(path == r or path.is_relative_to(r) for r in roots)


# The one refusal for every path that does not lead inside the roots: the same status and words whether the
# path exists, is readable, loops or is a symlink, and never where it leads (that would map the outside).
OUTSIDE_ROOTS = "outside the media roots (SAM_MEDIA_ROOTS)"


def resolve_media_path(raw: str | os.PathLike, roots: tuple[Path, ...] | None = None) -> Path:
    """The real path of ``raw`` (``~`` expanded, symlinks and ``..`` resolved), checked against ``roots``.

    The root check comes before any existence check, and resolving never fails on what lies outside the
    roots (``os.path.realpath`` without ``strict`` stops at a loop or an unreadable folder), so every path
    outside them gets the same :class:`VideoForbidden`. A loop or an unreadable entry inside the roots is
    reported when the file is opened.
    """
    text = os.fspath(raw)
    if "\x00" in text:
        raise VideoReadError("contains a NUL byte")
    try:
        # os.path.expanduser leaves ~nosuchuser as it is (pathlib raises): no answer tells which users exist
        real = Path(os.path.realpath(os.path.expanduser(text)))
    except (OSError, ValueError) as exc:  # the working directory vanished, an undecodable name
        raise VideoReadError(f"{text[:200]!r}: cannot resolve ({type(exc).__name__})") from None
    if not _inside(real, roots):
        raise VideoForbidden(OUTSIDE_ROOTS)
    return real


def stat_path(path: Path, name: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise VideoReadError(f"no such file or folder: {name}") from None
    except OSError as exc:  # ELOOP, ENAMETOOLONG, EACCES...
        raise VideoReadError(f"cannot open {name[:300]}: {exc.strerror or exc}") from None


def check_file(st: os.stat_result, name: str, refuse_hardlinks: bool = False) -> None:
    """Refuse what is not a regular file (a named pipe would block a reader), and with ``refuse_hardlinks``
    a file with more than one name: a hard link inside the roots may be the other name of a file outside
    them, and which names a file has elsewhere cannot be known cheaply, so every hard-linked file is refused."""
    if not stat.S_ISREG(st.st_mode):
        raise VideoUnsupported(f"{name[:300]} is not a regular file")
    if refuse_hardlinks and st.st_nlink > 1:
        raise VideoForbidden(f"{name[:300]} has {st.st_nlink} hard links (refused: SAM_MEDIA_REFUSE_HARDLINKS)")


def open_regular(path: Path, roots: tuple[Path, ...] | None, name: str, refuse_hardlinks: bool = False):
    """Open a regular file for reading after resolving it and checking it lies inside ``roots``.

    O_NONBLOCK makes a named pipe that appears in its place fail instead of blocking the thread; fstat on
    the open descriptor checks what was really opened (:func:`check_file`).
    """
    real = resolve_media_path(path, roots)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise VideoReadError(f"no such file: {name}") from None
    except OSError as exc:
        raise VideoReadError(f"cannot open {name[:300]}: {exc.strerror or exc}") from None
    try:
        check_file(os.fstat(fd), name, refuse_hardlinks)
    except VideoReadError:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _frame_sort_key(name: str) -> tuple:
    stem = name.rsplit(".", 1)[0]
    # ASCII digits only: str.isdigit and int() also accept other scripts' digits and superscripts.
    if stem.isascii() and stem.isdigit():
        return (0, int(stem), name)
    return (1, 0, name)


def list_frame_files(folder: Path, max_frames: int | None = None) -> list[Path]:
    """JPEG/PNG files of a folder, ordered by their integer stem when all stems are ASCII integers.

    Raises :class:`VideoTooLarge` as soon as more than ``max_frames`` are seen.
    """
    names: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower().endswith(IMAGE_EXTS) and not entry.name.startswith("."):
                    names.append(entry.name)
                    if max_frames is not None and len(names) > max_frames:
                        raise VideoTooLarge(f"more than {max_frames} frames (SAM_MAX_VIDEO_FRAMES)")
    except OSError as exc:
        raise VideoReadError(f"cannot list folder {folder.name}: {exc.strerror or exc}") from None
    keys = [_frame_sort_key(n) for n in names]
    if all(k[0] == 0 for k in keys):
        names = [n for _, n in sorted(zip(keys, names))]
    else:
        names.sort()
    return [folder / n for n in names]
