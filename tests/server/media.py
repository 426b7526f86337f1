"""Real images and videos for the service tests, and hand-made broken files.

Photos come from scikit-image; broken files are built byte by byte so each test knows exactly what is wrong.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def encode(array: np.ndarray, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def never_seen(photo: np.ndarray) -> np.ndarray:
    """A copy of ``photo`` whose first row is fresh random bytes: an image no cache of a shared server holds,
    whatever other tests sent before (for tests that count backbone runs)."""
    copy = np.array(photo, dtype=np.uint8, copy=True)
    copy[0] = np.frombuffer(os.urandom(copy[0].size), dtype=np.uint8).reshape(copy[0].shape)
    return copy


def decode_mask(png: bytes) -> np.ndarray:
    """A mask PNG from the service -> (H, W) uint8, checking it is single-channel 8-bit."""
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.mode == "L", (image.format, image.mode)
        return np.asarray(image)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, pixel_bytes: bytes = b"") -> bytes:
    """A grey PNG whose header declares ``width x height``; the pixel data is whatever is given (little)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(pixel_bytes))
        + _chunk(b"IEND", b"")
    )


def truncated_png(array: np.ndarray) -> bytes:
    data = encode(array, "PNG")
    return data[: len(data) // 2]


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """Encode RGB frames as an H.264/MPEG-4 file with PyAV."""
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=fps)
        except Exception:  # an FFmpeg build without x264
            stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_crops(photo: np.ndarray, n: int, size: int = 96, step: int = 6) -> list[np.ndarray]:
    """``n`` frames panning across a real photo (even sizes for yuv420p)."""
    return [np.ascontiguousarray(photo[100 : 100 + size, 100 + i * step : 100 + i * step + size]) for i in range(n)]
