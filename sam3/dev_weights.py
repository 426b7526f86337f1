"""Random weights that show something: the development mode's model (``SAM3_RANDOM_WEIGHTS=true``).

Freshly initialised weights score every detector query about the same (~0.26, under every released
threshold), so ``/detect`` finds nothing and a tracked video stays empty; a person cannot tell whether the
workflow works. ``make_visible`` applies, once, to a randomly initialised model the same change the parity
oracle uses to exercise the released thresholds (``tests/parity/oracle/video_official.py``, ``score_gain``):

* the dot-product scorer's query projection is scaled by ``SCORE_GAIN``, which spreads the class logits so a
  few queries score above 0.5 and some above 0.8;
* the presence head's output bias is raised by ``PRESENCE_SHIFT``, so the presence probability (~0.3 at
  random) is close to 1 and does not cap the scores;
* the interactive mask decoder's object-score bias is raised by ``OBJECT_SHIFT``, so a click is "an object"
  (a negative object score would blank the clicked mask in the tracker); SAM 3.1's multiplexed propagation
  decoder gets the same shift, so tracked objects stay visible.

Only weights change; the forward pass is the plain one. The masks stay meaningless (random weights).
Never applied to a loaded checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

SCORE_GAIN = -6.0
PRESENCE_SHIFT = 4.0
OBJECT_SHIFT = 4.0


@torch.no_grad()
def make_visible(model: nn.Module) -> nn.Module:
    """Spread the scores of a randomly initialised ``Sam3Model`` in place (see the module docstring)."""
    scorer = model.detector.dot_prod_scoring.hs_proj
    scorer.weight.mul_(SCORE_GAIN)
    scorer.bias.mul_(SCORE_GAIN)
    model.detector.transformer.decoder.presence_token_head.layers[-1].bias.add_(PRESENCE_SHIFT)
    tracker = getattr(model, "tracker", None)
    if tracker is not None:
        tracker.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(OBJECT_SHIFT)
        multiplexed = getattr(tracker, "model", None)  # SAM 3.1: the propagation decoder scores tracked objects
        if multiplexed is not None:
            multiplexed.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(OBJECT_SHIFT)
    return model
