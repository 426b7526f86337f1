"""``TrackingManager``: video object tracking sessions on the SAM 3 service (``/track/*``)."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from milimo_clients.base import ServiceClient


@dataclass(frozen=True)
class TrackingSession:
    session_id: str
    num_frames: int
    width: int
    height: int
    fps: float | None


@dataclass(frozen=True)
class FrameResult:
    """Objects on one frame. ``masks`` are 0/255 PNG bytes at the video size, aligned with ``object_ids``."""

    frame_idx: int
    object_ids: list[int]
    scores: list[float]
    masks: list[bytes] = field(repr=False)
    boxes: list[list[float]]  # pixel x0, y0, x1, y1

    @property
    def num_objects(self) -> int:
        return len(self.object_ids)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "FrameResult":
        return cls(
            frame_idx=int(body["frame_idx"]),
            object_ids=[int(i) for i in body["object_ids"]],
            scores=[float(s) for s in body["scores"]],
            masks=[base64.b64decode(m) for m in body["masks"]],
            boxes=[[float(v) for v in b] for b in body["boxes"]],
        )


@dataclass(frozen=True)
class PropagationResult:
    session_id: str
    direction: str
    num_frames_processed: int
    frames: list[FrameResult]


class TrackingManager(ServiceClient):
    """Client of ``/track/start``, ``/track/prompt``, ``/track/propagate`` and ``/track/stop``.

    Propagation of a long video on a CPU can take many minutes: the default read timeout is 30 minutes.
    """

    def __init__(self, base_url: str | None = None, *, timeout: float = 1800.0, **kwargs: Any):
        super().__init__(base_url, timeout=timeout, **kwargs)

    def start_session(self, video_path: str | os.PathLike, session_id: str | None = None) -> TrackingSession:
        """Open a session on a video file or a folder of JPEG/PNG frames (a path the service can read)."""
        body: dict[str, Any] = {"video_path": str(video_path)}
        if session_id is not None:
            body["session_id"] = session_id
        data = self.request("POST", "/track/start", json=body).json()
        return TrackingSession(
            session_id=data["session_id"],
            num_frames=int(data["num_frames"]),
            width=int(data["width"]),
            height=int(data["height"]),
            fps=None if data.get("fps") is None else float(data["fps"]),
        )

    def add_prompt(
        self,
        session_id: str,
        frame_idx: int,
        text: str | None = None,
        points: Sequence[Sequence[float]] | None = None,
        labels: Sequence[int] | None = None,
        boxes: Sequence[Sequence[float]] | Sequence[float] | None = None,
        obj_id: int | None = None,
    ) -> FrameResult:
        """Prompt one frame with text, pixel points (labels default to 1) and/or normalised cxcywh boxes."""
        body: dict[str, Any] = {"session_id": session_id, "frame_idx": int(frame_idx)}
        optional = {"text": text, "points": points, "labels": labels, "boxes": boxes, "obj_id": obj_id}
        for key, value in optional.items():
            if value is not None:
                body[key] = json.loads(json.dumps(value))  # tuples / numpy scalars -> plain JSON
        return FrameResult.from_json(self.request("POST", "/track/prompt", json=body).json())

    def propagate(
        self,
        session_id: str,
        direction: str = "both",
        start_frame: int | None = None,
        max_frames: int = -1,
    ) -> PropagationResult:
        """Track the prompted objects through the video (``max_frames=-1``: all frames)."""
        body: dict[str, Any] = {"session_id": session_id, "direction": direction, "max_frames": int(max_frames)}
        if start_frame is not None:
            body["start_frame"] = int(start_frame)
        data = self.request("POST", "/track/propagate", json=body).json()
        return PropagationResult(
            session_id=data["session_id"],
            direction=data["direction"],
            num_frames_processed=int(data["num_frames_processed"]),
            frames=[FrameResult.from_json(f) for f in data["frames"]],
        )

    def stop_session(self, session_id: str) -> bool:
        """Close the session and free its memory; False if it was unknown or already closed."""
        return bool(self.request("POST", "/track/stop", json={"session_id": session_id}).json()["closed"])

    @staticmethod
    def save_results(session_id: str, frames: Sequence[FrameResult | dict], out_dir: str | os.PathLike) -> str:
        """Write ``masks/<frame>_<obj>.png`` per object and a ``manifest.json``; returns the manifest path."""
        out = Path(out_dir)
        (out / "masks").mkdir(parents=True, exist_ok=True)
        entries = []
        for frame in frames:
            f = frame if isinstance(frame, FrameResult) else FrameResult.from_json(frame)
            objects = []
            for k, obj_id in enumerate(f.object_ids):
                rel = f"masks/{f.frame_idx}_{obj_id}.png"
                (out / rel).write_bytes(f.masks[k])
                objects.append({
                    "obj_id": obj_id,
                    "score": f.scores[k] if k < len(f.scores) else None,
                    "box": f.boxes[k] if k < len(f.boxes) else None,
                    "mask": rel,
                })
            entries.append({"frame_idx": f.frame_idx, "objects": objects})
        manifest = {"session_id": session_id, "num_frames": len(entries), "frames": entries}
        path = out / "manifest.json"
        path.write_text(json.dumps(manifest, indent=2))
        return str(path)
