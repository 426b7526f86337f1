"""The masks of a session as files an editor can use (``POST /track/export``), written to a temporary file that
the route then streams:

* ``png_zip``: ``<obj_id>/<frame:05d>.png``, single-channel 0/255 at the video size, for every computed frame
  in the range and every exported object (all zero where the object is absent on a computed frame);
* ``rle_json``: ``{"session_id", "video_hw", "frames": [<frame object with COCO RLE masks>]}``, computed frames;
* ``matte_mp4``: a grayscale matte per object (white = object), one H.264 video (lossless: ``qp=0``, yuv444p,
  with PyAV) per object with every frame of the range (black where no frame was computed); several objects are
  a zip of ``object_<obj_id>.mp4``.

Frame results are read one at a time from the session's stored results (nothing recomputed) and written as
they come, so the memory held is one frame's masks whatever the video's length.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Literal

import numpy as np
from PIL import Image

ExportFormat = Literal["png_zip", "rle_json", "matte_mp4"]
MEDIA_TYPES = {"png_zip": "application/zip", "rle_json": "application/json", "matte_mp4": "video/mp4"}
SPOOL_BYTES = 8 * 1024 * 1024  # exports smaller than this stay in memory


@dataclass(frozen=True)
class ExportPlan:
    """What to write: the session's video size and fps, the frames in the range with stored results, the
    objects, and a reader of one frame's masks (``frame -> {obj_id: (H, W) bool}``)."""

    session_id: str
    height: int
    width: int
    fps: float | None
    start: int
    end: int
    computed: list[int]
    obj_ids: list[int]
    read: Callable[[int], dict[int, np.ndarray]]
    read_wire: Callable[[int], dict]  # frame -> the /track/frames frame object with RLE masks


def file_name(plan: ExportPlan, fmt: ExportFormat) -> str:
    stem = f"{plan.session_id[:40]}_frames{plan.start}-{plan.end}"
    if fmt == "rle_json":
        return f"{stem}_rle.json"
    if fmt == "matte_mp4":
        return f"{stem}_matte_obj{plan.obj_ids[0]}.mp4" if len(plan.obj_ids) == 1 else f"{stem}_mattes.zip"
    return f"{stem}_masks.zip"


def media_type(plan: ExportPlan, fmt: ExportFormat) -> str:
    if fmt == "matte_mp4" and len(plan.obj_ids) != 1:
        return "application/zip"
    return MEDIA_TYPES[fmt]


def write_export(plan: ExportPlan, fmt: ExportFormat) -> IO[bytes]:
    """Write the export to a temporary file (in memory while small), rewound; the caller closes it."""
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    try:
        if fmt == "png_zip":
            _png_zip(plan, out)
        elif fmt == "rle_json":
            _rle_json(plan, out)
        else:
            _mattes(plan, out)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def _png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _png_zip(plan: ExportPlan, out: IO[bytes]) -> None:
    empty = np.zeros((plan.height, plan.width), bool)
    # PNGs are compressed already: stored, not deflated again
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for t in plan.computed:
            masks = plan.read(t)
            for obj_id in plan.obj_ids:
                archive.writestr(f"{obj_id}/{t:05d}.png", _png(masks.get(obj_id, empty)))


def _rle_json(plan: ExportPlan, out: IO[bytes]) -> None:
    head = {"session_id": plan.session_id, "video_hw": [plan.height, plan.width]}
    text = json.dumps(head, separators=(",", ":"))
    out.write(text[:-1].encode() + b',"frames":[')
    for k, t in enumerate(plan.computed):
        frame = plan.read_wire(t)
        keep = [i for i, obj_id in enumerate(frame["object_ids"]) if obj_id in plan.obj_ids]
        frame = {key: [frame[key][i] for i in keep] if isinstance(frame[key], list) else frame[key] for key in frame}
        out.write((b"," if k else b"") + json.dumps(frame, separators=(",", ":")).encode())
    out.write(b"]}")


def _frames_of(plan: ExportPlan) -> Iterator[dict[int, np.ndarray]]:
    computed = set(plan.computed)
    for t in range(plan.start, plan.end + 1):
        yield plan.read(t) if t in computed else {}


def _matte_video(plan: ExportPlan, obj_id: int, out: IO[bytes]) -> None:
    import av

    black = np.zeros((plan.height, plan.width), np.uint8)
    rate = max(1, round(plan.fps or 10))
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = plan.width, plan.height
        stream.pix_fmt = "yuv444p"  # any frame size; with qp=0 the matte survives bit for bit
        stream.options = {"qp": "0", "preset": "veryfast"}
        for masks in _frames_of(plan):
            mask = masks.get(obj_id)
            gray = black if mask is None else mask.astype(np.uint8) * 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(gray, format="gray")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _mattes(plan: ExportPlan, out: IO[bytes]) -> None:
    if len(plan.obj_ids) == 1:
        _matte_video(plan, plan.obj_ids[0], out)
        return
    # one pass over the frames per object: a frame's masks are read again per object rather than holding
    # every object's video open at once
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for obj_id in plan.obj_ids:
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as one:
                _matte_video(plan, obj_id, one)
                one.seek(0)
                with archive.open(f"object_{obj_id}.mp4", "w", force_zip64=True) as member:
                    while chunk := one.read(1 << 20):
                        member.write(chunk)
