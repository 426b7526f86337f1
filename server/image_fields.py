"""The form fields of the image routes beyond points / boxes (those are in ``server.prompts``).

Each parser takes the raw form text and returns typed values or raises a 4xx naming the field: 400 for
malformed values (bad JSON, wrong type or shape), 422 for well-formed values that break a limit (as the
contract's ``text`` and ``confidence`` already do).
"""

from __future__ import annotations

import json
import math
import re

from server.errors import BadValue, Unprocessable
from server.mask_codec import MASK_FORMATS, MaskFormat
from server.prompts import Box, parse_json_field, validate_boxes
from server.services.image_requests import Concept
from server.settings import Settings

MAX_TEXTS = 16  # concept prompts per request: each one runs the detector once
MAX_EXEMPLAR_BOXES = 16
MAX_OBJECT_INDICES = 1024
IMAGE_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
OBJECT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
# What the official processor encodes as the text of an exemplar-only prompt; our label for such objects.
EXEMPLAR_LABEL = "visual"


def check_text(text: str, settings: Settings, field: str = "text") -> str:
    """A stripped, non-empty prompt within ``SAM_MAX_TEXT_LENGTH`` (422 otherwise)."""
    text = text.strip()
    if not text:
        raise Unprocessable(f"{field}: must not be empty")
    if len(text) > settings.max_text_length:
        raise Unprocessable(
            f"{field}: {len(text)} characters, at most {settings.max_text_length} allowed (SAM_MAX_TEXT_LENGTH)"
        )
    return text


def parse_image_id(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not IMAGE_ID_PATTERN.match(value):
        raise BadValue(f"image_id: expected the 32 hex digits of a previous answer's image_id, got {value[:80]!r}")
    return value


def parse_object_id(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    if not OBJECT_ID_PATTERN.match(value.strip()):
        raise BadValue(f"object_id: 1 to 128 characters of A-Z a-z 0-9 _ . : -, got {value[:80]!r}")
    return value.strip()


def parse_texts(text: str | None, texts: str | None, settings: Settings) -> list[str]:
    """The text prompts: ``[text]``, the ``texts`` list, or [] (exemplar boxes alone)."""
    raw = parse_json_field(texts, "texts")
    if raw is not None and text is not None:
        raise BadValue("texts: give text or texts, not both")
    if raw is None:
        return [check_text(text, settings)] if text is not None else []
    if not isinstance(raw, list) or not raw:
        raise BadValue(f"texts: expected a non-empty JSON list of strings, got {json.dumps(raw)[:80]}")
    if len(raw) > MAX_TEXTS:
        raise Unprocessable(f"texts: {len(raw)} prompts, at most {MAX_TEXTS} in one request")
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise BadValue(f"texts[{i}]: expected a string, got {json.dumps(item)[:80]}")
    return [check_text(item, settings, f"texts[{i}]") for i, item in enumerate(raw)]


def parse_exemplars(boxes: str | None, box_labels: str | None) -> tuple[tuple[Box, ...], tuple[int, ...]]:
    """Exemplar boxes (normalised ``[cx, cy, w, h]``, one or a list) and their 1 / 0 labels (default all 1)."""
    raw_boxes = parse_json_field(boxes, "boxes")
    raw_labels = parse_json_field(box_labels, "box_labels")
    if raw_boxes is None:
        if raw_labels is not None:
            raise BadValue("box_labels: given without boxes")
        return (), ()
    parsed = validate_boxes(raw_boxes, max_boxes=MAX_EXEMPLAR_BOXES)
    if raw_labels is None:
        return tuple(parsed), (1,) * len(parsed)
    if not isinstance(raw_labels, list):
        raw_labels = [raw_labels] if not isinstance(raw_boxes[0], list) else raw_labels
    if not isinstance(raw_labels, list) or len(raw_labels) != len(parsed):
        raise BadValue(
            f"box_labels: expected a JSON list with one 1 (positive) or 0 (negative) per box ({len(parsed)}), "
            f"got {json.dumps(raw_labels)[:80]}"
        )
    for i, label in enumerate(raw_labels):
        if isinstance(label, bool) or label not in (0, 1):
            raise BadValue(f"box_labels[{i}]: expected 1 (positive) or 0 (negative exemplar), got {json.dumps(label)}")
    return tuple(parsed), tuple(int(v) for v in raw_labels)


def parse_concepts(text: str | None, texts: str | None, boxes: str | None, box_labels: str | None,
                   settings: Settings) -> list[Concept]:  # fmt: skip
    """One concept per text prompt, each with every exemplar box; or one exemplar-only concept."""
    prompts = parse_texts(text, texts, settings)
    exemplars, labels = parse_exemplars(boxes, box_labels)
    if not prompts and not exemplars:
        raise Unprocessable("text: field required (give text, texts, or exemplar boxes)")
    if not prompts:
        if 1 not in labels:
            raise Unprocessable("box_labels: exemplar boxes without text need at least one positive (1) box")
        return [Concept(None, exemplars, labels)]
    return [Concept(p, exemplars, labels) for p in prompts]


def _confidence_value(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Unprocessable(f"{where}: expected a number in 0..1, got {json.dumps(value)[:80]}")
    if not 0.0 <= value <= 1.0:
        raise Unprocessable(f"{where}: {value:g} is outside 0..1")
    return float(value)


def parse_confidence(value: str | None, num_prompts: int, default: float) -> list[float]:
    """One threshold per prompt: absent -> the default, a number -> for every prompt, a JSON list -> one each."""
    if value is None or not value.strip():
        return [default] * num_prompts
    try:
        raw = json.loads(value)
    except ValueError:
        raise Unprocessable(
            f"confidence: expected a number in 0..1 or a JSON list of them, got {value[:80]!r}"
        ) from None
    if isinstance(raw, list):
        if len(raw) != num_prompts:
            raise Unprocessable(f"confidence: {len(raw)} values for {num_prompts} prompts; give one per prompt")
        return [_confidence_value(v, f"confidence[{i}]") for i, v in enumerate(raw)]
    return [_confidence_value(raw, "confidence")] * num_prompts


def parse_object_indices(value: str | None) -> list[int] | None:
    raw = parse_json_field(value, "object_indices")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadValue(f"object_indices: expected a JSON list of object indices, got {json.dumps(raw)[:80]}")
    if len(raw) > MAX_OBJECT_INDICES:
        raise BadValue(f"object_indices: {len(raw)} indices, at most {MAX_OBJECT_INDICES}")
    for i, index in enumerate(raw):
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise BadValue(
                f"object_indices[{i}]: expected an index >= 0 into /detect's objects, got {json.dumps(index)}"
            )
    return list(dict.fromkeys(raw))  # a repeated index adds nothing to the union


def parse_mask_format(value: str | None) -> MaskFormat:
    fmt = (value or "png").strip().lower()
    if fmt not in MASK_FORMATS:
        raise Unprocessable(f"mask_format: expected one of {', '.join(MASK_FORMATS)}, got {value[:40]!r}")
    return fmt  # type: ignore[return-value]
