"""Giving freed heap memory back to the operating system.

glibc's malloc keeps memory that was freed inside its arenas (one per thread that allocated, up to eight per
core) and only returns the top of each heap. A propagation decodes a frame (1.4 MB of YUV and a 2.8 MB RGB
copy at 1280x720), resizes it and runs the model in worker threads, so every thread's arena keeps the
high-water mark of what it once held: on a 1600-frame 1280x720 clip (tiny preset, 2 cores) the service grew
from 851 to 1749 MB before reaching a plateau, and to 1132 MB with the trim. ``malloc_trim(0)`` releases the
free pages of every arena; the tracking service calls :func:`trim_heap` every few propagated frames and when a
session closes. Elsewhere (macOS, musl) it is a no-op.

Within a frame loop the opposite matters: each frame frees and re-allocates the same large buffers (masks at
video size, attention activations). With glibc's defaults, buffers above its mmap threshold (dynamic, at most
32 MB) are mapped and unmapped every time and the free top of a heap above the trim threshold is given back,
so every frame page-faults its buffers in again: at 16 tracked objects (tiny preset, 1280x720, 2-core AMD EPYC)
1.06 M minor page faults in a 12-frame run and 2.4 s of system time. :func:`keep_freed_buffers` raises both
thresholds (mmap 32 MB, trim 256 MB): 0.26 M faults, 0.7 s. The periodic :func:`trim_heap` still bounds what
is kept. An operator's own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (or ``GLIBC_TUNABLES``
naming them) win: then nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit
TRIM_THRESHOLD = 256 << 20
_OPERATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _load_libc_function(name: str, argtypes: list):
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None
    function = getattr(libc, name, None)
    if function is not None:
        function.argtypes, function.restype = argtypes, ctypes.c_int
    return function


_MALLOC_TRIM = _load_libc_function("malloc_trim", [ctypes.c_size_t])
_MALLOPT = _load_libc_function("mallopt", [ctypes.c_int, ctypes.c_int])


def can_trim() -> bool:
    """True where :func:`trim_heap` does something (Linux with glibc)."""
    return _MALLOC_TRIM is not None


def trim_heap() -> bool:
    """Return the free pages of every malloc arena to the OS; True when some were returned."""
    return bool(_MALLOC_TRIM(0)) if _MALLOC_TRIM is not None else False


def keep_freed_buffers() -> bool:
    """Let glibc keep a frame loop's freed buffers for the next frame (see the module docstring); True when the
    thresholds were set (Linux with glibc, and no operator setting of them in the environment)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    operator_set = any(k in os.environ for k in _OPERATOR_SETTINGS) or any(
        name in tunables for name in ("malloc.mmap_threshold", "malloc.trim_threshold")
    )
    if _MALLOPT is None or operator_set:
        return False
    return bool(_MALLOPT(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(_MALLOPT(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
