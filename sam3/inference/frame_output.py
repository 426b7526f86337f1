"""A frame's output from its objects' masks, with one device-to-host transfer.

On the device: the masks of the visible objects are stacked, and where several non-empty masks overlap each
pixel goes to the object with the highest tracker score (an object without a positive score loses its pixels,
as released; :func:`resolve_overlaps`). The raw masks (what the session stores) and the resolved ones (what is returned) travel back
together as one (N, H, W) uint8 tensor (bit 0 raw, bit 1 resolved); empty masks are dropped and the boxes of
the raw masks computed on the host. Same results as resolving the non-empty masks alone on the device.
"""

from __future__ import annotations

import numpy as np
import torch

from sam3.inference.video_state import FrameResult
from sam3.ops.boxes import masks_to_boxes


def frame_output(
    frame_idx: int,
    masks: dict[int, torch.Tensor],
    hidden: set[int],
    tracker_scores: dict[int, float],
    object_scores: dict[int, float],
    video_hw: tuple[int, int],
    device: torch.device,
) -> tuple[FrameResult, dict[int, np.ndarray]]:
    """masks: id -> (1, H, W) bool (on the device or the host). Returns the frame's result (sorted ids, empty
    and hidden objects dropped, overlaps resolved) and the raw (H, W) bool masks of every visible object."""
    h, w = video_hw
    ids = [i for i in sorted(masks) if i not in hidden]
    if not ids:
        return _empty(frame_idx, h, w), {}
    stack = torch.cat([masks[i].to(device) for i in ids])  # (N, H, W) bool
    resolved = stack
    if len(ids) > 1:
        nonempty = stack.flatten(1).any(1)
        contested = resolve_overlaps(stack, [tracker_scores.get(i, 0.0) for i in ids])
        resolved = torch.where(nonempty.sum() > 1, contested, stack)  # one non-empty mask keeps all its pixels
    packed = (stack.to(torch.uint8) | (resolved.to(torch.uint8) << 1)).cpu()  # the one transfer
    raw = (packed & 1).bool()
    keep = raw.flatten(1).any(1).numpy()
    stored = {i: raw[k].numpy() for k, i in enumerate(ids)}
    if not keep.any():
        return _empty(frame_idx, h, w), stored
    rows = np.flatnonzero(keep)
    boxes = masks_to_boxes(raw[rows]).numpy()
    out_masks = ((packed[rows] >> 1) & 1).bool().numpy()
    out_ids = np.array(ids, np.int64)[rows]
    scores = np.array([object_scores.get(int(i), 0.0) for i in out_ids], np.float32)
    return FrameResult(frame_idx, out_ids, scores, boxes.astype(np.float32), out_masks), stored


def resolve_overlaps(stack: torch.Tensor, scores: list[float]) -> torch.Tensor:
    """(N, H, W) bool masks and their N tracker scores (host floats) -> (N, H, W) bool: each pixel goes to the
    covering object of highest score, the lower index on a tie; an object without a positive score keeps none.

    The released rule is an argmax over the objects of (score where covered, 0 elsewhere, -inf for an empty
    mask), kept where positive. Walking the objects by (score desc, index asc) and giving each the pixels no
    earlier one covered is the same rule: 2 passes over an (H, W) plane per object instead of several over the
    (N, H, W) floats (at 16 objects of 1280x720: 11 ms instead of 220 ms on a 2-core CPU)."""
    out = torch.zeros_like(stack)
    claimed = torch.zeros_like(stack[0])
    for k in sorted(range(len(scores)), key=lambda k: (-scores[k], k)):
        if not scores[k] > 0:
            break  # the rest score no higher: they keep nothing, and claim nothing a kept object could want
        out[k] = stack[k] & ~claimed
        claimed |= stack[k]
    return out


def _empty(frame_idx: int, h: int, w: int) -> FrameResult:
    return FrameResult(
        frame_idx,
        np.zeros(0, np.int64),
        np.zeros(0, np.float32),
        np.zeros((0, 4), np.float32),
        np.zeros((0, h, w), bool),
    )
