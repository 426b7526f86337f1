"""Bounded integer types for the JSON bodies: every integer is range-checked at the edge (pydantic, 422),
so no value beyond what numpy / torch hold reaches the model (an ``obj_id`` of 2**70 raised OverflowError
deep in the predictor, a 500).

Use in request models, e.g. ``obj_id: ObjectId | None = None``, ``frame_idx: FrameIndex``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# int32: what the predictor's id and index tensors hold, and far beyond any real video or object count.
MAX_INDEX = 2**31 - 1

FrameIndex = Annotated[int, Field(ge=0, le=MAX_INDEX, description="0-based frame index")]
ObjectId = Annotated[int, Field(ge=0, le=MAX_INDEX, description="object id (int32)")]
FrameCount = Annotated[int, Field(ge=-1, le=MAX_INDEX, description="number of frames; -1 means all")]
