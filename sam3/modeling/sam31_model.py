"""The whole SAM 3.1 model: SAM 3's detector on a three-head neck and the multiplexed tracker.

Its ``state_dict`` is the layout of Meta's ``sam3.1_multiplex.pt``: ``detector.*`` and ``tracker.model.*``
(1623 tensors). Everything the image paths use is :class:`~sam3.modeling.sam3_model.Sam3Model`'s: the
detector (text, boxes) is the same module, and ``tracker`` offers the interactive heads under the names the
click predictor reads.
"""

from __future__ import annotations

from sam3.config_multiplex import Sam31Config
from sam3.modeling.detector.detector import Sam3Detector
from sam3.modeling.multiplex.tracker import MultiplexTrackerHolder
from sam3.modeling.sam3_model import Sam3Model


class Sam31Model(Sam3Model):
    """``detector`` (Sam3Detector with a :class:`~sam3.modeling.vision.tri_neck.TriFpnNeck`) and ``tracker``
    (:class:`MultiplexTrackerHolder`). ``config`` is the :class:`Sam31Config`."""

    version = "sam3.1"

    def __init__(self, config: Sam31Config, detector: Sam3Detector, tracker: MultiplexTrackerHolder, tokenizer=None):
        super().__init__(config, detector, tracker, tokenizer=tokenizer)  # type: ignore[arg-type]

    def propagation_levels(self, trunk):
        """trunk map (B, C_trunk, g, g) -> the propagation neck's levels (the multiplexed tracker's input)."""
        return self.detector.backbone.vision_backbone.propagation_levels(trunk)
