"""What an image request asks the model service for and what it answers: a click (``ClickPrompt`` ->
``ClickResult`` of ``MaskCandidate``s) and text / exemplar concepts (``Concept`` -> ``DetectResult`` of
``Detection``s). Plain values: the routes and ``server.image_fields`` build them, ``ModelService`` computes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.prompts import Box


@dataclass(frozen=True)
class MaskCandidate:
    """One interactive mask: (H, W) bool at the image size, its predicted IoU, its (4g, 4g) low-res logits."""

    mask: np.ndarray
    score: float
    low_res: np.ndarray


@dataclass(frozen=True)
class ClickPrompt:
    """A /predict/mask request, parsed but not yet checked against the image size (unknown before decoding).

    ``points`` / ``labels`` are the parsed JSON values (None when absent); ``box`` a normalised box.
    ``object_id`` names the object for refinement; ``refine`` feeds its previous logits back as mask input.
    """

    points: object | None
    labels: object | None
    box: Box | None
    multimask: bool
    object_id: str | None = None
    refine: bool = False


@dataclass(frozen=True)
class ClickResult:
    """Candidates best first; ``refined`` says whether a previous mask of the object was the mask input."""

    image_id: str
    width: int
    height: int
    candidates: list[MaskCandidate]
    refined: bool


@dataclass(frozen=True)
class Concept:
    """One concept prompt: a text (None: exemplar boxes only) and exemplar boxes with 1 / 0 labels."""

    text: str | None
    boxes: tuple[Box, ...] = ()
    box_labels: tuple[int, ...] = ()


@dataclass(frozen=True)
class Detection:
    """One detected object: (H, W) bool mask, pixel xyxy box (clipped), score, and the prompt that found it."""

    mask: np.ndarray
    box: list[float]
    score: float
    prompt_index: int = 0


@dataclass(frozen=True)
class DetectResult:
    """Every kept object of every prompt, highest score first (ties keep prompt then query order)."""

    image_id: str
    width: int
    height: int
    detections: list[Detection]
    counts: list[int]  # objects per prompt
