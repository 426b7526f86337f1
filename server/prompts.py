"""Validation of click / box prompts, shared by the image routes (JSON text in form fields) and /track.

Every failure is a 400 whose message names the field and, for lists, the offending index.
Coordinates on the wire (service contract): points are pixels ``[x, y]`` of the image or frame; boxes are
normalised ``[cx, cy, w, h]`` in 0..1.

Hostile input is stopped here, at the edge: a JSON form field is size- and depth-checked before it is parsed
(100,000 ``[`` would otherwise exhaust the recursion limit), every number is range-checked before it is
converted (an integer beyond 64 bits would otherwise overflow in numpy or torch), and messages quote at
most a short excerpt of the offending value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from server.errors import BadValue, TooLarge

# A box corner may stick out of 0..1 by this much (float round-off from the caller's conversion).
_BOX_EPS = 1e-6

# JSON in a form field: the prompt fields are a few hundred bytes and two levels deep; these bounds are far
# above any real prompt and far below what costs memory or recursion.
MAX_JSON_FIELD_CHARS = 64 * 1024
MAX_JSON_DEPTH = 8
# Integers beyond this are refused before any conversion (exact in float64 and in int64).
MAX_ABS_INT = 2**53


@dataclass(frozen=True)
class Box:
    """A normalised ``cx, cy, w, h`` box."""

    cx: float
    cy: float
    w: float
    h: float

    def to_pixel_xyxy(self, width: int, height: int) -> list[float]:
        """Pixel ``[x0, y0, x1, y1]`` of an image of ``width x height``."""
        return [
            (self.cx - self.w / 2) * width,
            (self.cy - self.h / 2) * height,
            (self.cx + self.w / 2) * width,
            (self.cy + self.h / 2) * height,
        ]

    def to_list(self) -> list[float]:
        return [self.cx, self.cy, self.w, self.h]


def show(value: object, limit: int = 40) -> str:
    """A short JSON excerpt of ``value`` for an error message (never the whole of a huge value)."""
    try:
        text = json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_depth_exceeds(text: str, max_depth: int) -> bool:
    """Whether ``[`` / ``{`` nest deeper than ``max_depth`` in ``text`` (brackets inside strings do not count).

    One linear pass with no recursion, so it is safe on any input, unlike the parser it protects."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def parse_json_field(
    text: str | None, field: str, *, max_chars: int = MAX_JSON_FIELD_CHARS, max_depth: int = MAX_JSON_DEPTH
) -> object | None:
    """``None`` / blank -> None; otherwise the parsed JSON value.

    413 when the text is longer than ``max_chars``; 400 when it is not JSON or nests deeper than ``max_depth``.
    """
    if text is None or not text.strip():
        return None
    if len(text) > max_chars:
        raise TooLarge(f"{field}: {len(text)} characters of JSON, at most {max_chars} allowed")
    if json_depth_exceeds(text, max_depth):
        raise BadValue(f"{field}: JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = exc.args[0] if isinstance(exc, ValueError) and exc.args else type(exc).__name__
        raise BadValue(f"{field}: not valid JSON ({reason})") from None


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadValue(f"{where}: expected a finite number, got {show(value)}")
    if isinstance(value, int) and abs(value) > MAX_ABS_INT:
        raise BadValue(f"{where}: {show(value)} is out of range")
    if not math.isfinite(value):
        raise BadValue(f"{where}: expected a finite number, got {show(value)}")
    return float(value)


def validate_int(value: object, where: str, *, lo: int, hi: int) -> int:
    """An integer (not a bool, not a float) in ``lo..hi``; 400 naming ``where`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(f"{where}: expected an integer, got {show(value)}")
    if not lo <= value <= hi:
        raise BadValue(f"{where}: {show(value)} is outside {lo}..{hi}")
    return value


def validate_points(value: object, *, width: int, height: int, max_points: int, field: str = "points"):
    """A list of pixel ``[x, y]`` pairs inside the ``width x height`` image -> list of (x, y) floats."""
    if not isinstance(value, list):
        raise BadValue(f"{field}: expected a JSON list of [x, y] pairs, got {type(value).__name__}")
    if not value:
        raise BadValue(f"{field}: the list is empty; give at least one [x, y] pair or leave the field out")
    if len(value) > max_points:
        raise BadValue(f"{field}: {len(value)} points, at most {max_points} allowed (SAM_MAX_POINTS)")
    points = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2:
            raise BadValue(f"{field}[{i}]: expected an [x, y] pair, got {show(pair)}")
        x, y = _number(pair[0], f"{field}[{i}][0]"), _number(pair[1], f"{field}[{i}][1]")
        if not (0 <= x <= width and 0 <= y <= height):
            raise BadValue(f"{field}[{i}]: ({x:g}, {y:g}) lies outside the {width}x{height} image (pixel coordinates)")
        points.append((x, y))
    return points


def validate_labels(value: object, num_points: int, field: str = "labels") -> list[int]:
    """One 0/1 label per point; ``None`` means 1 (foreground) for every point."""
    if value is None:
        return [1] * num_points
    if not isinstance(value, list):
        raise BadValue(f"{field}: expected a JSON list of 0/1, got {type(value).__name__}")
    if num_points == 0 and value:
        raise BadValue(f"{field}: labels given without points")
    if len(value) != num_points:
        raise BadValue(f"{field}: {len(value)} labels for {num_points} points; give one label per point")
    for i, label in enumerate(value):
        if isinstance(label, bool) or label not in (0, 1):
            raise BadValue(f"{field}[{i}]: expected 0 (background) or 1 (foreground), got {show(label)}")
    return [int(v) for v in value]


def _validate_box(value: object, where: str) -> Box:
    if not isinstance(value, list) or len(value) != 4:
        raise BadValue(f"{where}: expected [cx, cy, w, h] normalised to 0..1, got {show(value)}")
    cx, cy, w, h = (_number(v, f"{where}[{i}]") for i, v in enumerate(value))
    for name, v in zip(("cx", "cy", "w", "h"), (cx, cy, w, h)):
        if not 0.0 <= v <= 1.0:
            raise BadValue(f"{where}: {name}={v:g} is outside 0..1 (boxes are normalised [cx, cy, w, h])")
    if w <= 0 or h <= 0:
        raise BadValue(f"{where}: width and height must be > 0, got w={w:g}, h={h:g}")
    if cx - w / 2 < -_BOX_EPS or cx + w / 2 > 1 + _BOX_EPS or cy - h / 2 < -_BOX_EPS or cy + h / 2 > 1 + _BOX_EPS:
        raise BadValue(f"{where}: the box [{cx:g}, {cy:g}, {w:g}, {h:g}] extends outside the image (0..1)")
    return Box(cx, cy, w, h)


def validate_boxes(value: object, *, max_boxes: int | None, field: str = "boxes") -> list[Box]:
    """One box ``[cx, cy, w, h]`` or a list of them -> list of :class:`Box` (``max_boxes`` caps the count)."""
    if not isinstance(value, list) or not value:
        raise BadValue(f"{field}: expected [cx, cy, w, h] or a list of such boxes")
    boxes_in = value if isinstance(value[0], list) else [value]
    if max_boxes is not None and len(boxes_in) > max_boxes:
        raise BadValue(f"{field}: {len(boxes_in)} boxes given, at most {max_boxes} allowed here")
    where = (lambda i: f"{field}[{i}]") if isinstance(value[0], list) else (lambda i: field)
    return [_validate_box(b, where(i)) for i, b in enumerate(boxes_in)]
