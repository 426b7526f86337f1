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


@pytest.mark.skipif(not can_trim(), reason="malloc_trim is glibc's (Linux); a no-op elsewhere")
def test_trim_returns_freed_fragmented_heap_pages():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(root=str(ROOT), blocks=BLOCKS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    before, freed, trimmed, released = out.stdout.split()
    before, freed, trimmed = float(before), float(freed), float(trimmed)
    assert before - freed < VOLUME_MB / 3, "free() alone should keep most of the fragmented pages"
    assert freed - trimmed > VOLUME_MB * 2 / 3, (before, freed, trimmed)
    assert released == "True"


def test_trim_is_a_no_op_where_malloc_trim_is_missing(monkeypatch):
    import server.heap

    monkeypatch.setattr(server.heap, "_MALLOC_TRIM", None)
    assert server.heap.can_trim() is False and server.heap.trim_heap() is False
