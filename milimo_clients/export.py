"""Tracking results on disk: ``masks/<frame>_<obj>.png`` per object and frame, and ``manifest.json``.

One writer for ``TrackingManager.save_results`` (a folder the caller names) and the router's
``/edit/track/save`` (``<export root>/exports/tracking/<session_id>/``, see ``fastapi_router.py``).
Masks may arrive as PNG or COCO RLE; they are written as 0/255 PNG either way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from milimo_clients.masks import mask_png

#: Session ids that can name a folder: letters, digits, ``_ . -``, not starting with a dot, 1..128 chars.
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_MAX_ID = 2**63 - 1


def check_session_id(session_id: Any) -> str:
    if not isinstance(session_id, str) or not SESSION_ID_PATTERN.fullmatch(session_id) or ".." in session_id:
        raise ValueError(
            "session_id: must be 1-128 characters of letters, digits, '_', '.', '-', start with a letter or "
            "digit, and not contain '..'"
        )
    return session_id


def _index(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ID:
        raise ValueError(f"{where}: expected an integer in 0..2**63-1, got {value!r}")
    return value


def _frame_parts(frame: Any, i: int) -> tuple[int, list[int], list, list, list]:
    if hasattr(frame, "frame_idx") and hasattr(frame, "masks"):
        return frame.frame_idx, list(frame.object_ids), list(frame.masks), list(frame.scores), list(frame.boxes)
    if not isinstance(frame, dict):
        raise ValueError(f"frames[{i}]: expected a frame object")
    import base64
    import binascii

    masks = []
    for k, m in enumerate(frame.get("masks") or []):
        if isinstance(m, str):
            try:
                m = base64.b64decode(m, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"frames[{i}].masks[{k}]: not base64") from None
        masks.append(m)
    return (
        frame.get("frame_idx"),
        list(frame.get("object_ids") or []),
        masks,
        list(frame.get("scores") or []),
        list(frame.get("boxes") or []),
    )


def write_tracking_export(session_id: str, frames: Iterable[Any], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write every object mask of ``frames`` (``FrameResult`` or the wire's frame objects) under
    ``out_dir/masks/`` and ``out_dir/manifest.json`` (written last); returns the manifest.

    A malformed frame is a ``ValueError`` naming it (``frames[2].masks[0]: ...``) before anything is written.
    """
    entries, files = [], {}
    for i, frame in enumerate(frames):
        frame_idx, object_ids, masks, scores, boxes = _frame_parts(frame, i)
        frame_idx = _index(frame_idx, f"frames[{i}].frame_idx")
        if len(masks) != len(object_ids):
            raise ValueError(f"frames[{i}].masks: {len(masks)} masks for {len(object_ids)} object_ids")
        objects = []
        for k, obj_id in enumerate(object_ids):
            obj_id = _index(obj_id, f"frames[{i}].object_ids[{k}]")
            rel = f"masks/{frame_idx}_{obj_id}.png"
            if rel in files:
                raise ValueError(f"frames[{i}]: object {obj_id} on frame {frame_idx} is listed twice")
            try:
                files[rel] = mask_png(masks[k])
            except ValueError as exc:
                raise ValueError(f"frames[{i}].masks[{k}]: {exc}") from None
            objects.append(
                {
                    "obj_id": obj_id,
                    "score": scores[k] if k < len(scores) else None,
                    "box": boxes[k] if k < len(boxes) else None,
                    "mask": rel,
                }
            )
        entries.append({"frame_idx": frame_idx, "objects": objects})
    manifest = {"session_id": session_id, "num_frames": len(entries), "num_masks": len(files), "frames": entries}
    out = Path(out_dir)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for rel, png in files.items():
        (out / rel).write_bytes(png)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def export_session(root: str | os.PathLike, session_id: str, frames: Iterable[Any]) -> tuple[Path, dict[str, Any]]:
    """``<root>/exports/tracking/<session_id>/`` replaced by a fresh export of ``frames``.

    The id is checked first, the folder is resolved and must stay inside ``root`` (no ``..``, no symlink
    out), and the export is built in a sibling temp folder and swapped in, so a failed save leaves the
    previous one intact and a new save leaves no stale masks.
    """
    check_session_id(session_id)
    base = Path(root).resolve()
    tracking = base / "exports" / "tracking"
    tracking.mkdir(parents=True, exist_ok=True)
    if not tracking.resolve().is_relative_to(base):
        raise PermissionError("exports/tracking: resolves outside the export root")
    target = tracking / session_id
    if target.is_symlink() or not target.resolve().is_relative_to(tracking.resolve()):
        raise PermissionError(f"session_id: {session_id} resolves outside the export root")
    staging = tracking / f".{session_id}.{uuid.uuid4().hex}.tmp"
    try:
        manifest = write_tracking_export(session_id, frames, staging)
        old = None
        if target.exists():
            old = tracking / f".{session_id}.{uuid.uuid4().hex}.old"
            target.rename(old)
        staging.rename(target)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target, manifest
