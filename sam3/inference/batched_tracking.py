"""One frame of tracking for many tracklet batches at once: memory attention, mask decoder and memory encoder
each run once per frame for every tracked object, not once per batch.

Objects of batches whose memory plans share a layout (``memory_gather.MemoryPlan.layout``: the same temporal
slots and pointer distances, e.g. objects clicked on the same frame) share one memory-attention call; the
mask decoder and the memory encoder work per object, so they take every object of the frame together. With
``bucket``, the object count is padded (by repeating the last object) to the next of 1, 2, 4, 8, 16, ... so
that a compiled or graph-captured step sees few shapes; padded rows are dropped from the outputs. Every
object's result is what its own batch's ``Sam3Tracker.track_step`` gives (fp32 round-off aside: a matrix
product's rows may round differently at another batch size), checked by ``tests/inference/test_batched_tracking.py``.

Shapes: N objects in all, B_i in batch i, C = d_model, g the level-2 grid side, S the model input size,
M the input-mask size, m = mem_dim.
"""

from __future__ import annotations

import torch

from sam3.modeling.tracker.memory_gather import assemble_memory, plan_memory
from sam3.modeling.tracker.state import MemoryBank, TrackerFeatures, TrackStepOutput
from sam3.modeling.tracker.tracker import Sam3Tracker, memory_selection_score


def bucket_size(n: int) -> int:
    """The padded object count: the next power of two (1, 2, 4, 8, 16, ...) at or above ``n``."""
    return 1 << max(0, (n - 1).bit_length())


def pad_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, ...) -> (n, ...), the last row repeated (a real object's values: no NaN or overflow in padding)."""
    if x.shape[0] == n:
        return x
    return torch.cat([x, x[-1:].expand(n - x.shape[0], *x.shape[1:])])


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def track_frame(
    tracker: Sam3Tracker,
    features: TrackerFeatures,
    banks: list[MemoryBank],
    sizes: list[int],
    frame_idx: int,
    num_frames: int,
    reverse: bool,
    run_mem_encoder: bool = False,
    bucket: bool = True,
) -> list[TrackStepOutput]:
    """Track the ``sizes[i]`` objects of every ``banks[i]`` on a frame (no clicks, no mask inputs).

    features: the frame's batch-of-one tracker features. Returns one ``TrackStepOutput`` per bank (as
    ``track_step(frame_idx, False, features.expand(sizes[i]), banks[i], ...)`` would); the banks are read,
    not modified.
    """
    device = features.image_embed.device
    plans = [plan_memory(tracker, frame_idx, bank, num_frames, reverse) for bank in banks]
    groups: dict[tuple, list[int]] = {}
    for k, plan in enumerate(plans):
        groups.setdefault(plan.layout, []).append(k)
    order = [k for ks in groups.values() for k in ks]  # the banks in the order of the batched rows
    total = sum(sizes)
    padded = bucket_size(total) if bucket else total

    f = features.expand(padded)
    conditioned = []
    for ks in groups.values():
        n = sum(sizes[k] for k in ks)
        rows = padded if len(groups) == 1 else (bucket_size(n) if bucket else n)
        memory, memory_pos, num_ptr_tokens = assemble_memory(tracker, [plans[k] for k in ks], n, device)
        g = f if rows == padded else features.expand(rows)
        out = tracker.attend_memory(
            g.image_embed, g.image_pos, pad_rows(memory, rows), pad_rows(memory_pos, rows), num_ptr_tokens
        )
        conditioned.append(out if len(groups) == 1 else out[:n])
    pix = pad_rows(_cat(conditioned), padded)  # (padded, C, g, g)
    sam = tracker.forward_sam_heads(pix, high_res=f.high_res, multimask_output=tracker.use_multimask(False, None))
    maskmem = None
    if run_mem_encoder and tracker.num_maskmem > 0:
        maskmem = tracker.encode_new_memory(f.image_embed, sam.high_res_masks, sam.object_score_logits, False)

    split = [sizes[k] for k in order]

    def parts(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        t = t[:total] if padded != total else t
        return (t,) if len(split) == 1 else torch.split(t, split)

    fields = {
        "pred_masks": parts(sam.low_res_masks),
        "pred_masks_high_res": parts(sam.high_res_masks),
        "ious": parts(sam.ious),
        "obj_ptr": parts(sam.obj_ptr),
        "object_score_logits": parts(sam.object_score_logits),
    }
    if maskmem is not None:
        fields["maskmem_features"], fields["maskmem_pos"] = parts(maskmem[0]), parts(maskmem[1])
    if tracker.use_memory_selection:
        best = sam.ious.max(-1)[0]
        fields["iou_score"] = parts(best)
        if all(s == 1 for s in split):
            # one object per bank: each bank's score is its object's confidence times IoU (a mean of one)
            scores = sam.object_score_logits[:total, 0]
            conf = torch.where(scores > 0, scores.sigmoid() * 2 - 1, torch.zeros_like(scores))
            fields["eff_iou_score"] = (conf * best[:total]).unbind(0)
        else:
            fields["eff_iou_score"] = [
                memory_selection_score(s, i) for s, i in zip(fields["object_score_logits"], fields["iou_score"])
            ]
    outputs: list[TrackStepOutput | None] = [None] * len(banks)
    for row, k in enumerate(order):
        outputs[k] = TrackStepOutput(**{name: values[row] for name, values in fields.items()})
    return outputs


def encode_memories(
    tracker: Sam3Tracker,
    features: TrackerFeatures,
    high_res_masks: torch.Tensor,
    object_score_logits: torch.Tensor,
    bucket: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory encoder once for N objects of a frame: (N, 1, M, M) mask logits (sigmoid path) and (N, 1)
    object-score logits -> spatial memories (N, m, g, g) and their PE."""
    n = high_res_masks.shape[0]
    padded = bucket_size(n) if bucket else n
    feats, pos = tracker.encode_new_memory(
        features.expand(padded).image_embed,
        pad_rows(high_res_masks, padded),
        pad_rows(object_score_logits, padded),
        False,
    )
    return (feats[:n], pos[:n]) if padded != n else (feats, pos)
