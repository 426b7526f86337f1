"""The bounded integer types of the JSON bodies refuse what does not fit an int32 id or index."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from server.wire_types import MAX_INDEX, FrameCount, FrameIndex, ObjectId


@pytest.mark.parametrize("kind", [FrameIndex, ObjectId])
def test_indices_accept_int32_and_refuse_beyond(kind):
    adapter = TypeAdapter(kind)
    assert adapter.validate_python(0) == 0
    assert adapter.validate_python(MAX_INDEX) == MAX_INDEX
    for bad in (-1, MAX_INDEX + 1, 2**63, 2**70, -(2**70)):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)


def test_frame_count_allows_minus_one_for_all():
    adapter = TypeAdapter(FrameCount)
    assert adapter.validate_python(-1) == -1
    with pytest.raises(ValidationError):
        adapter.validate_python(2**64)
    with pytest.raises(ValidationError):
        adapter.validate_json(b"1" + b"0" * 40)
