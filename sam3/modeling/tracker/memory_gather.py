"""Which memories a frame attends to (a :class:`MemoryPlan`, host bookkeeping only) and their assembly into
the memory-attention input, for one memory bank or for several banks with the same layout at once.

Banks whose plans have the same ``layout`` (the same temporal slots and pointer distances, e.g. objects
clicked on the same frame) give token sequences of the same length and the same position encodings, so their
objects can share one memory-attention call: the assembly concatenates them along the batch dimension, which
moves values without changing them (the tokens of each object equal those of its own bank's assembly).

Shapes: B objects, m = mem_dim, C = hidden dim, g the level-2 grid side, P the pointer count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sam3.device import upload
from sam3.modeling.layers.position_encoding import get_1d_sine_pe
from sam3.modeling.tracker.state import FrameMemory, MemoryBank


@dataclass(frozen=True)
class MemoryPlan:
    """The memories one bank contributes on a frame.

    spatial:  (temporal slot, memory) pairs: selected conditioning frames in slot 0, recent frames 1..n-1
    pointers: (temporal distance, memory) pairs whose ``obj_ptr`` become pointer tokens
    max_ptrs: the distance normaliser (``min(num_frames, max_obj_ptrs_in_encoder)``)
    """

    spatial: tuple[tuple[int, FrameMemory], ...]
    pointers: tuple[tuple[int, FrameMemory], ...]
    max_ptrs: int

    @property
    def layout(self) -> tuple:
        """Plans with equal layouts assemble to tokens of the same length and position encodings."""
        return tuple(t for t, _ in self.spatial), tuple(d for d, _ in self.pointers), self.max_ptrs


def plan_memory(tracker, frame_idx: int, bank: MemoryBank, num_frames: int, reverse: bool) -> MemoryPlan:
    """The memory plan of ``bank`` on ``frame_idx`` for a ``Sam3Tracker`` (no tensor is read or computed)."""
    if not bank.cond:
        raise ValueError("tracking needs at least one conditioning frame in the memory bank")
    sign = -1 if reverse else 1
    selected, unselected = bank.select_cond_frames(frame_idx, tracker.max_cond_frames_in_attn)
    valid: list[int] = []
    if tracker.use_memory_selection:
        valid = bank.select_memory_frames(
            frame_idx, num_frames, reverse, tracker.max_obj_ptrs_in_encoder, tracker.memory_selection_threshold
        )

    # Spatial memories: selected conditioning frames use temporal slot 0; recent frames slots 1..num_maskmem-1.
    spatial: list[tuple[int, FrameMemory]] = [(0, m) for m in selected.values()]
    for t_pos in range(1, tracker.num_maskmem):
        t_rel = tracker.num_maskmem - t_pos  # frames away from the current one
        if tracker.use_memory_selection:
            if t_rel > len(valid):
                continue
            prev = valid[-t_rel]
        else:
            prev = frame_idx - sign * t_rel
        mem = bank.non_cond.get(prev)
        if mem is None:
            # A conditioning frame left out above still serves as an ordinary recent memory.
            mem = unselected.get(prev)
        if mem is not None:
            spatial.append((t_pos, mem))
    for _, mem in spatial:
        if mem.maskmem_features is None or mem.maskmem_pos is None:
            raise ValueError("a memory frame has no encoded memory (run the memory encoder first)")

    # Object pointers: past (or current) selected conditioning frames at their real distance, then
    # recent frames at distance 1, 2, ... (with memory selection: the rank among the selected frames).
    max_ptrs = min(num_frames, tracker.max_obj_ptrs_in_encoder)
    ptrs: list[tuple[int, FrameMemory]] = [
        ((frame_idx - t) * sign, m) for t, m in selected.items() if (t >= frame_idx if reverse else t <= frame_idx)
    ]
    for t_diff in range(1, max_ptrs):
        if tracker.use_memory_selection:
            # The oldest selected frame contributes no pointer (as released).
            if t_diff >= len(valid):
                break
            t = valid[-t_diff]
        else:
            t = frame_idx - sign * t_diff
            if t < 0 or t >= num_frames:
                break
        mem = bank.non_cond.get(t, unselected.get(t))
        if mem is not None:
            ptrs.append((t_diff, mem))
    return MemoryPlan(tuple(spatial), tuple(ptrs), max_ptrs)


def _batch(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def assemble_memory(
    tracker, plans: list[MemoryPlan], batch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Memory (B, n*g*g + P*C/m, m), its position encoding (same shape) and the number of trailing pointer
    tokens, for plans of one ``layout`` whose banks hold ``batch_size`` objects in all (in plan order)."""
    first = plans[0]
    if any(p.layout != first.layout for p in plans[1:]):
        raise ValueError("memory plans of different layouts cannot share one memory-attention call")
    tokens, pos = [], []
    for k, (t_pos, _) in enumerate(first.spatial):
        feats = _batch([p.spatial[k][1].maskmem_features.to(device) for p in plans])
        feats_pos = _batch([p.spatial[k][1].maskmem_pos.to(device) for p in plans])
        tokens.append(feats.flatten(2).transpose(1, 2))
        tpos = tracker.maskmem_tpos_enc[tracker.num_maskmem - t_pos - 1].view(1, 1, -1)
        pos.append(feats_pos.flatten(2).transpose(1, 2) + tpos)

    num_ptr_tokens = 0
    if first.pointers:
        dist = upload([d for d, _ in first.pointers], device) / (first.max_ptrs - 1)
        ptr_pos = tracker.obj_ptr_tpos_proj(get_1d_sine_pe(dist, tracker.hidden_dim))  # (P, m)
        per_ptr = [_batch([p.pointers[k][1].obj_ptr.to(device) for p in plans]) for k in range(len(first.pointers))]
        obj_ptrs = torch.stack(per_ptr, dim=1)  # (B, P, C)
        split = tracker.hidden_dim // tracker.mem_dim
        if split > 1:
            # Each C-wide pointer becomes `split` consecutive m-wide tokens sharing one PE.
            obj_ptrs = obj_ptrs.reshape(batch_size, -1, tracker.mem_dim)
            ptr_pos = ptr_pos.repeat_interleave(split, dim=0)
        tokens.append(obj_ptrs)
        pos.append(ptr_pos.unsqueeze(0).expand(batch_size, -1, -1))
        num_ptr_tokens = obj_ptrs.shape[1]
    return torch.cat(tokens, dim=1), torch.cat(pos, dim=1), num_ptr_tokens
