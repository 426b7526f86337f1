"""Giving freed heap memory back to the operating system.

glibc's malloc keeps memory that was freed inside its arenas (one per thread that allocated, up to eight per
core) and only returns the top of each heap. A propagation decodes a frame (1.4 MB of YUV and a 2.8 MB RGB
copy at 1280x720), resizes it and runs the model in worker threads, so every thread's arena keeps the
high-water mark of what it once held: on a 1600-frame 1280x720 clip (tiny preset, 2 cores) the service grew
from 851 to 1749 MB before reaching a plateau, and to 1132 MB with the trim. ``malloc_trim(0)`` releases the
free pages of every arena; the tracking service calls :func:`trim_heap` every few propagated frames and when a
session closes. Elsewhere (macOS, musl) it is a no-op.
"""

from __future__ import annotations

import ctypes
import sys


def _load_malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def can_trim() -> bool:
    """True where :func:`trim_heap` does something (Linux with glibc)."""
    return _MALLOC_TRIM is not None


def trim_heap() -> bool:
    """Return the free pages of every malloc arena to the OS; True when some were returned."""
    return bool(_MALLOC_TRIM(0)) if _MALLOC_TRIM is not None else False
