"""Typed tensors passed between the model's components. Everything is batch-first.

Shapes use B = batch, C = d_model (256), g = feature grid side (72 for the released model),
Q = number of decoder queries, L = number of prompt tokens, D = number of decoder layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BackboneFeatures:
    """Output of the vision backbone for a batch of images.

    fpn / pos:           detector neck levels after the coarsest is dropped:
                         [(B,C,4g,4g), (B,C,2g,2g), (B,C,g,g)] and their sine encodings (same shapes).
    sam2_fpn / sam2_pos: the tracker neck (``sam2_convs``), same shapes, raw (before ``conv_s0``/``conv_s1``);
                         None when the model has no tracker.
    """

    fpn: list[torch.Tensor]
    pos: list[torch.Tensor]
    sam2_fpn: list[torch.Tensor] | None = None
    sam2_pos: list[torch.Tensor] | None = None

    @property
    def batch_size(self) -> int:
        return self.fpn[-1].shape[0]

    def select(self, index: int) -> "BackboneFeatures":
        """The features of one image as a batch of one."""
        pick = lambda ts: None if ts is None else [t[index : index + 1] for t in ts]  # noqa: E731
        return BackboneFeatures(pick(self.fpn), pick(self.pos), pick(self.sam2_fpn), pick(self.sam2_pos))

    def nbytes(self) -> int:
        tensors = list(self.fpn) + list(self.pos) + list(self.sam2_fpn or []) + list(self.sam2_pos or [])
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class TextFeatures:
    """Encoded text prompts.

    features: (B, L, C) after the resizer (L = context length, 32)
    mask:     (B, L) bool, True marks padding
    """

    features: torch.Tensor
    mask: torch.Tensor


@dataclass
class GeometricPrompt:
    """Box and point prompts for the detector, right-padded per batch element.

    boxes:        (B, Nb, 4) normalised cx, cy, w, h
    box_labels:   (B, Nb) long, 1 positive / 0 negative
    box_mask:     (B, Nb) bool, True marks padding
    points:       (B, Np, 2) normalised x, y
    point_labels: (B, Np) long
    point_mask:   (B, Np) bool, True marks padding
    """

    boxes: torch.Tensor
    box_labels: torch.Tensor
    box_mask: torch.Tensor
    points: torch.Tensor
    point_labels: torch.Tensor
    point_mask: torch.Tensor

    @staticmethod
    def empty(batch_size: int, device: torch.device | None = None) -> "GeometricPrompt":
        z = lambda *s, dt=torch.float32: torch.zeros(*s, dtype=dt, device=device)  # noqa: E731
        return GeometricPrompt(
            boxes=z(batch_size, 0, 4),
            box_labels=z(batch_size, 0, dt=torch.long),
            box_mask=z(batch_size, 0, dt=torch.bool),
            points=z(batch_size, 0, 2),
            point_labels=z(batch_size, 0, dt=torch.long),
            point_mask=z(batch_size, 0, dt=torch.bool),
        )

    @staticmethod
    def from_boxes(boxes: torch.Tensor, labels: torch.Tensor) -> "GeometricPrompt":
        """boxes (B, Nb, 4) cxcywh, labels (B, Nb) -> a prompt with no points and no padding."""
        b, n, _ = boxes.shape
        empty = GeometricPrompt.empty(b, boxes.device)
        empty.boxes = boxes.float()
        empty.box_labels = labels.long()
        empty.box_mask = torch.zeros(b, n, dtype=torch.bool, device=boxes.device)
        return empty


@dataclass
class DecoderOutput:
    """Per-layer decoder outputs.

    hs:               (D, B, Q, C) query states after the shared output LayerNorm
    reference_boxes:  (D, B, Q, 4) the cxcywh reference boxes each layer started from (sigmoid space)
    presence_logits:  (D, B, 1)
    """

    hs: torch.Tensor
    reference_boxes: torch.Tensor
    presence_logits: torch.Tensor


@dataclass
class GroundingOutput:
    """Detector result for one (image, prompt) pair, with the intermediates the parity harness compares.

    pred_logits:     (B, Q) class logits of the last layer (presence not folded in)
    presence_logit:  (B, 1) presence logit of the last layer
    pred_boxes:      (B, Q, 4) normalised cxcywh, last layer
    pred_masks:      (B, Q, 4g, 4g) mask logits
    prompt:          (B, L, C) prompt tokens fed to the encoder (text then geometry)
    prompt_mask:     (B, L) bool, True = padding
    memory:          (B, g*g, C) fusion-encoder output
    decoder:         per-layer decoder states
    all_pred_logits: (D, B, Q) class logits of every layer
    all_pred_boxes:  (D, B, Q, 4) boxes of every layer
    """

    pred_logits: torch.Tensor
    presence_logit: torch.Tensor
    pred_boxes: torch.Tensor
    pred_masks: torch.Tensor
    prompt: torch.Tensor
    prompt_mask: torch.Tensor
    memory: torch.Tensor
    decoder: DecoderOutput
    all_pred_logits: torch.Tensor
    all_pred_boxes: torch.Tensor

    @property
    def scores(self) -> torch.Tensor:
        """(B, Q) image score = sigmoid(class) * sigmoid(presence)."""
        return torch.sigmoid(self.pred_logits) * torch.sigmoid(self.presence_logit)
