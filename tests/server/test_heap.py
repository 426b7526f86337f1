"""server.heap.trim_heap gives freed heap memory back to the OS (glibc), in a fresh process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.heap import can_trim

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = 150  # of 2 MB each: the volume freed, against which the figures below are read
VOLUME_MB = 2 * BLOCKS

# Fragment the heap the way a propagation does: large buffers freed while small live objects sit between
# them, so the freed pages are not at the top of the heap and free() alone cannot return them.
SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from server.heap import trim_heap

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

big = bytearray(8 << 20)
big[::4096] = bytes(len(big[::4096]))
del big  # freeing an mmapped chunk raises glibc's mmap threshold past 2 MB
blocks, pins = [], []
for _ in range({blocks}):
    block = bytearray(2 << 20)  # 2 MB, now from the heap
    block[::4096] = b"x" * len(block[::4096])  # touched, so resident
    blocks.append(block)
    pins.append(bytearray(1024))  # a small live object after it (over 512 B: malloc, not pymalloc)
del block
before = rss_mb()
del blocks
freed = rss_mb()
trimmed = trim_heap()
print(before, freed, rss_mb(), trimmed)
"""


def _run(script: str, env: dict | None = None) -> list[str]:
    """Run a script in a fresh interpreter (its own heap); the words it printed."""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True, env=env
    )
    return out.stdout.split()


@pytest.mark.skipif(not can_trim(), reason="malloc_trim is glibc's (Linux); a no-op elsewhere")
def test_trim_returns_freed_fragmented_heap_pages():
    before, freed, trimmed, released = _run(SCRIPT.format(root=str(ROOT), blocks=BLOCKS))
    before, freed, trimmed = float(before), float(freed), float(trimmed)
    assert before - freed < VOLUME_MB / 3, "free() alone should keep most of the fragmented pages"
    assert freed - trimmed > VOLUME_MB * 2 / 3, (before, freed, trimmed)
    assert released == "True"


def test_trim_is_a_no_op_where_malloc_trim_is_missing(monkeypatch):
    import server.heap

    monkeypatch.setattr(server.heap, "_MALLOC_TRIM", None)
    assert server.heap.can_trim() is False and server.heap.trim_heap() is False


# A frame loop's pattern: the same large buffers allocated, touched and freed every frame.
FRAME_LOOP = """
import os, resource, sys
sys.path.insert(0, {root!r})
from server.heap import keep_freed_buffers

kept = keep_freed_buffers() if {tune} else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

start = faults()
for _ in range(20):
    frame = [bytearray(24 << 20) for _ in range(4)]  # together over glibc's trim threshold (2 x 24 MB)
    for buf in frame:
        buf[::4096] = b"x" * len(buf[::4096])
    del frame, buf
print(kept, faults() - start)
"""


def _frame_loop(tune: bool, env: dict | None = None) -> tuple[str, int]:
    kept, faults = _run(FRAME_LOOP.format(root=str(ROOT), tune=tune), env)
    return kept, int(faults)


@pytest.mark.skipif(not can_trim(), reason="mallopt is glibc's (Linux); a no-op elsewhere")
def test_kept_buffers_are_not_faulted_in_again_every_frame():
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    kept, tuned = _frame_loop(True, env)
    _, default = _frame_loop(False, env)
    pages = (96 << 20) // 4096  # one frame's buffers
    print(f"\nminor page faults over 20 frames: {default} with glibc's defaults, {tuned} kept")
    assert kept == "True"
    assert default > 15 * pages  # glibc maps and unmaps them every frame
    assert tuned < 3 * pages  # faulted in once, then reused


@pytest.mark.skipif(not can_trim(), reason="mallopt is glibc's (Linux); a no-op elsewhere")
def test_an_operators_malloc_setting_wins():
    import os

    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="1048576")
    kept, _ = _frame_loop(True, env)
    assert kept == "False"
