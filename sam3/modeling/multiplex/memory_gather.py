"""Which memories a SAM 3.1 tracker state attends to on a frame, assembled for the decoupled memory attention.

As SAM 3 (:mod:`sam3.modeling.tracker.memory_gather`), with the multiplex layout: a frame's spatial memory is
one map per bucket, its image side (the frame's propagation features, shared by the buckets) is kept beside
it, and every frame contributes M pointer tokens per bucket (one per slot). Differences from SAM 3, as
released: a selected conditioning frame takes the temporal encoding of its real distance (the "out of range"
one beyond ``num_maskmem - 1`` frames, and at distance 0), pointers of every selected conditioning frame are
used (also those ahead of the frame) at their unsigned distance.

Shapes: B buckets, M slots per bucket, C = d_model = mem_dim, g the grid side, n memory frames, P pointer frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sam3.device import upload
from sam3.modeling.layers.position_encoding import get_1d_sine_pe
from sam3.modeling.multiplex.frames import MultiplexFrame
from sam3.modeling.tracker.state import MemoryBank


@dataclass
class GatheredMemory:
    """memory_image (1, n*g*g, C) and memory_image_pos: the memory frames' image side (temporal encoding added
    to the position); memory (B, n*g*g + P*M, C) and memory_pos: the buckets' memories then pointer tokens;
    num_ptr_tokens = P*M."""

    memory_image: torch.Tensor
    memory_image_pos: torch.Tensor
    memory: torch.Tensor
    memory_pos: torch.Tensor
    num_ptr_tokens: int


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, g, g) -> (B, g*g, C)."""
    return x.flatten(2).transpose(1, 2)


def gather_memory(tracker, frame_idx: int, bank: MemoryBank, num_frames: int, reverse: bool) -> GatheredMemory | None:
    """The memory of ``frame_idx`` from ``bank`` (of :class:`MultiplexFrame`), or None when no frame carries an
    encoded memory (the frame is then decoded from its own features)."""
    if not bank.cond:
        raise ValueError("tracking needs at least one conditioning frame in the memory bank")
    sign = -1 if reverse else 1
    n_mem = tracker.num_maskmem
    selected, unselected = bank.select_cond_frames(frame_idx, tracker.config.tracker.max_cond_frames_in_attn)
    spatial: list[tuple[int, MultiplexFrame | None]] = [((frame_idx - t) * sign, m) for t, m in selected.items()]
    for t_pos in range(1, n_mem):
        prev = frame_idx - sign * (n_mem - t_pos)
        spatial.append((t_pos, bank.non_cond.get(prev, unselected.get(prev))))

    mem, mem_pos, img, img_pos = [], [], [], []
    for t_pos, frame in spatial:
        if frame is None or frame.maskmem_features is None:
            continue
        slot = n_mem - 1 if t_pos <= 0 or t_pos >= n_mem else n_mem - t_pos - 1
        tpos = tracker.maskmem_tpos_enc[slot].view(1, 1, -1)
        mem.append(_tokens(frame.maskmem_features))
        mem_pos.append(_tokens(frame.maskmem_pos) + tpos)
        img.append(_tokens(frame.image))
        img_pos.append(_tokens(frame.image_pos) + tpos)
    if not mem:
        return None

    max_ptrs = min(num_frames, tracker.config.tracker.max_obj_ptrs_in_encoder)
    ptrs: list[tuple[int, MultiplexFrame]] = [(abs(frame_idx - t), m) for t, m in selected.items()]
    for t_diff in range(1, max_ptrs):
        t = frame_idx - sign * t_diff
        if t < 0 or t >= num_frames:
            break
        frame = bank.non_cond.get(t, unselected.get(t))
        if frame is not None:
            ptrs.append((t_diff, frame))
    num_ptr_tokens = 0
    if ptrs:
        b, m = ptrs[0][1].obj_ptr.shape[:2]
        dist = upload([d for d, _ in ptrs], mem[0].device) / (max_ptrs - 1)
        pos = tracker.obj_ptr_tpos_proj(get_1d_sine_pe(dist, tracker.hidden_dim))  # (P, C)
        mem.append(torch.cat([f.obj_ptr for _, f in ptrs], dim=1))  # (B, P*M, C)
        mem_pos.append(pos.repeat_interleave(m, dim=0).unsqueeze(0).expand(b, -1, -1))
        num_ptr_tokens = len(ptrs) * m
    return GatheredMemory(
        torch.cat(img, 1), torch.cat(img_pos, 1), torch.cat(mem, 1), torch.cat(mem_pos, 1), num_ptr_tokens
    )
