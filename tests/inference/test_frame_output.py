"""The overlap rule of a frame's output (sam3.inference.frame_output.resolve_overlaps) against the released
rule written as the official code computes it: an argmax over the objects of (score where covered, 0 elsewhere,
-inf for an empty mask), kept where positive."""

from __future__ import annotations

import pytest
import torch

from sam3.inference.frame_output import resolve_overlaps


def released_rule(stack: torch.Tensor, scores: list[float]) -> torch.Tensor:
    conf = torch.tensor(scores)
    nonempty = stack.flatten(1).any(1)
    per_pixel = torch.where(stack, conf[:, None, None], torch.zeros(()))
    per_pixel = torch.where(nonempty[:, None, None], per_pixel, float("-inf"))
    winner = per_pixel.argmax(dim=0, keepdim=True) == torch.arange(len(scores))[:, None, None]
    return stack & winner & (per_pixel > 0)


@pytest.mark.parametrize("seed", range(6))
def test_the_walk_by_score_is_the_released_argmax(seed):
    g = torch.Generator().manual_seed(seed)
    n = 4 + seed * 3
    stack = torch.rand(n, 40, 56, generator=g) > 0.6  # heavy overlaps
    stack[0] = False  # an empty mask
    scores = torch.rand(n, generator=g).tolist()
    scores[1] = scores[2] = 0.75  # a tie: the lower index wins
    scores[-1] = 0.0  # no positive score: keeps nothing
    if n > 5:
        scores[3] = -0.5
    resolved = resolve_overlaps(stack, scores)
    assert torch.equal(resolved, released_rule(stack, scores))
    assert not (resolved.sum(0) > 1).any()  # a pixel belongs to at most one object


def test_one_non_empty_mask_keeps_its_pixels_whatever_its_score():
    stack = torch.zeros(3, 6, 8, dtype=torch.bool)
    stack[1, 2:4, 3:6] = True
    resolved = resolve_overlaps(stack, [0.9, -0.3, 0.0])  # the only non-empty mask has no positive score
    assert torch.equal(resolved, stack)
    stack[2, 0, 0] = True  # a second non-empty mask: the released rule applies again
    assert torch.equal(resolve_overlaps(stack, [0.9, -0.3, 0.0]), released_rule(stack, [0.9, -0.3, 0.0]))


@pytest.mark.parametrize("seed", range(4))
def test_frame_output_is_the_rule_on_the_visible_masks_with_their_boxes(seed):
    """ids sorted, hidden ones out, overlaps resolved by the tracker scores, empty masks dropped from the result
    but stored, boxes of the raw masks, reported scores from ``object_scores``."""
    from sam3.inference.frame_output import frame_output
    from sam3.ops.boxes import masks_to_boxes

    g = torch.Generator().manual_seed(seed)
    h, w = 30, 44
    ids = [7, 2, 11, 5, 9][: 2 + seed]
    masks = {i: (torch.rand(1, h, w, generator=g) > 0.7) for i in ids}
    masks[ids[0]][:] = False  # empty: stored, not returned
    hidden = {ids[1]} if seed % 2 else set()
    tracker_scores = {i: float(torch.rand((), generator=g)) - 0.2 for i in ids}
    object_scores = {i: 0.5 + 0.01 * i for i in ids}
    result, stored = frame_output(4, masks, hidden, tracker_scores, object_scores, (h, w), torch.device("cpu"))

    visible = [i for i in sorted(ids) if i not in hidden]
    stack = torch.cat([masks[i] for i in visible])
    scores = [tracker_scores[i] for i in visible]
    nonempty = stack.flatten(1).any(1)
    expected = released_rule(stack, scores) if nonempty.sum() > 1 else stack
    keep = nonempty.tolist()
    assert sorted(stored) == visible
    for i in visible:
        assert (stored[i] == masks[i][0].numpy()).all()
    assert result.frame_idx == 4
    assert result.obj_ids.tolist() == [i for i, k in zip(visible, keep) if k]
    assert (result.masks == expected[nonempty].numpy()).all()
    assert (result.boxes_xyxy == masks_to_boxes(stack[nonempty]).numpy()).all()
    assert result.scores.tolist() == pytest.approx([object_scores[i] for i in result.obj_ids.tolist()])


def test_frame_output_with_every_mask_empty_or_hidden():
    from sam3.inference.frame_output import frame_output

    masks = {1: torch.zeros(1, 5, 6, dtype=torch.bool), 2: torch.ones(1, 5, 6, dtype=torch.bool)}
    result, stored = frame_output(0, masks, {2}, {}, {}, (5, 6), torch.device("cpu"))
    assert result.obj_ids.shape == (0,) and result.masks.shape == (0, 5, 6) and result.boxes_xyxy.shape == (0, 4)
    assert list(stored) == [1] and not stored[1].any()
