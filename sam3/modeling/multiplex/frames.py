"""Typed per-frame inputs and memories of SAM 3.1's multiplexed tracker.

N objects are tracked in ``buckets`` of M slots (:class:`~sam3.modeling.multiplex.multiplex_state.MultiplexState`);
per-object tensors are in object order (index 0..N-1), per-slot ones in slot space (buckets, M, ...). C = d_model,
g the level-2 grid side, S the model input size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class HeadFeatures:
    """One neck head's features of a frame (batch of one).

    image:    (1, C, g, g) level 2
    pos:      (1, C, g, g) its sine position encoding
    high_res: [(1, C/8, 4g, 4g), (1, C/4, 2g, 2g)] levels 0 and 1 after the head's decoder ``conv_s0`` / ``conv_s1``
    """

    image: torch.Tensor
    pos: torch.Tensor
    high_res: list[torch.Tensor]


@dataclass
class MultiplexFeatures:
    """A frame's features for the tracker: the interactive head (masks and clicks become pointers there) and
    the propagation head (memory attention, the multiplex decoder, the memory encoder)."""

    interactive: HeadFeatures
    propagation: HeadFeatures


@dataclass
class MultiplexFrame:
    """What a tracker state keeps of one frame.

    pred_masks:          (N, 1, 4g, 4g) low-res logits, object order
    object_score_logits: (N, 1)
    obj_ptr:             (buckets, M, C) object pointers in slot space (zeros in empty slots)
    conditioning:        object indices whose mask on this frame came from a prompt or a detection
    maskmem_features:    (buckets, C, g, g) spatial memory (rounded through bf16), None before encoding
    maskmem_pos:         (buckets, C, g, g) its position encoding
    image / image_pos:   (1, C, g, g) the frame's propagation-head level 2 and its encoding (the memory's
                         image side)
    """

    pred_masks: torch.Tensor
    object_score_logits: torch.Tensor
    obj_ptr: torch.Tensor
    conditioning: frozenset[int]
    maskmem_features: torch.Tensor | None = None
    maskmem_pos: torch.Tensor | None = None
    image: torch.Tensor | None = None
    image_pos: torch.Tensor | None = None

    @property
    def num_objects(self) -> int:
        return self.pred_masks.shape[0]

    def with_memory(self, features: torch.Tensor, pos: torch.Tensor, head: HeadFeatures) -> MultiplexFrame:
        """A copy carrying a (re-)encoded spatial memory and the image side it was encoded on."""
        return replace(self, maskmem_features=features, maskmem_pos=pos, image=head.image, image_pos=head.pos)


@dataclass
class PropagationOutput:
    """The multiplexed decoder's result for the N objects of a state on one frame.

    low_res_masks:       (N, 1, 4g, 4g) the candidate with the best predicted IoU (-1024 where absent)
    high_res_masks:      (N, 1, S, S) its bilinear upsampling
    object_score_logits: (N, 1)
    obj_ptr:             (N, C) pointers, object order
    """

    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    object_score_logits: torch.Tensor
    obj_ptr: torch.Tensor


@dataclass
class MaskOutput:
    """Binary masks taken as the prediction (logits +-10) for K objects.

    low_res_masks:       (K, 1, S_in/4, S_in/4) antialiased downsampling of the +-10 logits
    high_res_masks:      (K, 1, S_in, S_in) the +-10 logits at the input-mask size S_in
    object_score_logits: (K, 1) +10 for a non-empty mask, else -10
    obj_ptr:             (K, C) pointers from the interactive heads prompted with the masks
    """

    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    object_score_logits: torch.Tensor
    obj_ptr: torch.Tensor
