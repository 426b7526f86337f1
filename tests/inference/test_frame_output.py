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
