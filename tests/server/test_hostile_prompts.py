"""The edge checks of server.prompts on their own (no app, no model): JSON form fields parsed within size and
depth bounds, numbers range-checked before any conversion, short excerpts in messages."""

from __future__ import annotations

import pytest

from server.errors import BadValue, TooLarge
from server.prompts import (
    MAX_JSON_DEPTH,
    json_depth_exceeds,
    parse_json_field,
    show,
    validate_boxes,
    validate_int,
    validate_labels,
    validate_points,
)


@pytest.mark.parametrize(
    "text, deep",
    [
        ("[[1, 2]]", False),
        ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, False),
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), True),
        ('{"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}', True),
        ('["[[[[[[[[[[[[[[[[[[[["]', False),  # brackets inside a string
        ('["\\"[[[[[[[[[[[[[[[[[["]', False),  # ... after an escaped quote
        ('["\\\\", [[[[[[[[[[]]]]]]]]]]]', True),  # an escaped backslash ends the escape
    ],
)
def test_depth_scan(text, deep):
    assert json_depth_exceeds(text, MAX_JSON_DEPTH) is deep


def test_parse_json_field_bounds():
    assert parse_json_field(None, "points") is None
    assert parse_json_field("  ", "points") is None
    assert parse_json_field("[[1, 2]]", "points") == [[1, 2]]
    with pytest.raises(BadValue, match=r"^points: JSON nested deeper than 8 levels"):
        parse_json_field("[" * 100_000, "points", max_chars=10**6)
    with pytest.raises(TooLarge, match=r"^points: 100000 characters"):
        parse_json_field("[" * 100_000, "points")
    with pytest.raises(BadValue, match=r"^labels: not valid JSON"):
        parse_json_field("[1,", "labels")


@pytest.mark.parametrize("bad", [2**64, -(2**70), 10**400, float("inf"), float("nan"), True, "5", None])
def test_numbers_are_refused_before_conversion(bad):
    with pytest.raises(BadValue, match=r"^points\[0\]\[0\]: "):
        validate_points([[bad, 1]], width=100, height=100, max_points=4)
    with pytest.raises(BadValue, match=r"^boxes(\[\d\])?: "):
        validate_boxes([bad, 0.5, 0.1, 0.1], max_boxes=1)


def test_labels_and_ints():
    with pytest.raises(BadValue, match=r"^labels\[0\]: "):
        validate_labels([2**70], 1)
    assert validate_int(3, "obj", lo=0, hi=10) == 3
    for bad in (2**63, -1, 1.0, True):
        with pytest.raises(BadValue, match=r"^obj: "):
            validate_int(bad, "obj", lo=0, hi=10)


def test_messages_quote_short_excerpts():
    assert len(show(list(range(10_000)))) == 40
    with pytest.raises(BadValue) as info:
        validate_points([["x" * 100_000, 1]], width=10, height=10, max_points=4)
    assert len(str(info.value)) < 120
