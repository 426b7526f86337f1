"""The per-image state of :class:`~sam3.inference.processor.Sam3Processor`: the cached backbone outputs of one
image (``CachedImage``), the byte-bounded LRU that holds them (``ByteLRU``), a detection's outputs, and the
typed states the processor hands out (``ImageState``, ``ImageBatchState``; they also answer ``state["key"]``
like the official dictionaries).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from sam3.inference.interactive import SamImageFeatures
from sam3.modeling.outputs import BackboneFeatures, TextFeatures


@dataclass
class _CachedImage:
    """What one image costs one backbone pass: detector levels, and the click predictor's features."""

    features: BackboneFeatures  # batch of one; tracker levels dropped once ``sam`` is prepared
    sam: SamImageFeatures | None
    hw: tuple[int, int]  # original (height, width)

    def nbytes(self) -> int:
        return self.features.nbytes() + (self.sam.nbytes() if self.sam is not None else 0)


@dataclass
class _Detections:
    """Every query's outputs for the current prompt, kept so that a new threshold needs no new forward.

    scores (Q,), boxes (Q, 4) xyxy original pixels, mask_logits (Q, 4g, 4g).
    """

    scores: torch.Tensor
    boxes: torch.Tensor
    mask_logits: torch.Tensor


@dataclass
class ImageState:
    """One image, its prompts and the last results; ``state["masks"]`` etc. read the attributes.

    ``cached`` holds the image's features, shared with the processor's cache (never modified):
    ``features`` the detector levels (batch of one), ``cached.sam`` the click predictor's projected
    tracker levels (None without a tracker). ``prompt_boxes`` lists (normalised cxcywh, positive?).
    Results (None until a prompt ran; N kept queries): ``masks`` (N, 1, H, W) bool, ``masks_logits``
    (N, 1, H, W) probabilities, ``boxes`` (N, 4) xyxy pixels, ``scores`` (N,).
    """

    original_height: int
    original_width: int
    image_key: str
    cached: _CachedImage = field(repr=False)
    text_prompt: str | None = None
    text: TextFeatures | None = field(default=None, repr=False)
    prompt_boxes: list[tuple[tuple[float, float, float, float], bool]] = field(default_factory=list)
    detections: _Detections | None = field(default=None, repr=False)
    # Results of the last grounding (None before one ran).
    masks: torch.Tensor | None = field(default=None, repr=False)
    masks_logits: torch.Tensor | None = field(default=None, repr=False)
    boxes: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    low_res_masks: torch.Tensor | None = field(default=None, repr=False)  # (N, 4g, 4g) logits of the kept

    _KEYS = ("original_height", "original_width", "masks", "masks_logits", "boxes", "scores")

    @property
    def features(self) -> BackboneFeatures:
        return self.cached.features

    @property
    def image_id(self) -> str:
        """The feature-cache key of the image (what :meth:`Sam3Processor.restore_image` takes)."""
        return self.image_key

    @property
    def mask_probs(self) -> torch.Tensor | None:
        """(N, 1, H, W) mask probabilities (the official ``masks_logits``)."""
        return self.masks_logits

    @property
    def masks_hw(self) -> torch.Tensor | None:
        """(N, H, W) bool masks."""
        return None if self.masks is None else self.masks[:, 0]

    def __getitem__(self, key: str):
        if key not in self._KEYS:
            raise KeyError(key)
        value = getattr(self, key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: str) -> bool:
        return key in self._KEYS and getattr(self, key) is not None

    def get(self, key: str, default=None):
        return self[key] if key in self else default


@dataclass
class ImageBatchState:
    """Several images set at once (one backbone pass for the uncached ones); prompts apply to each."""

    states: list[ImageState]

    @property
    def original_heights(self) -> list[int]:
        return [s.original_height for s in self.states]

    @property
    def original_widths(self) -> list[int]:
        return [s.original_width for s in self.states]

    def __len__(self) -> int:
        return len(self.states)

    def __iter__(self):
        return iter(self.states)

    def __getitem__(self, key: int | str):
        if isinstance(key, int):
            return self.states[key]
        if key in ("original_heights", "original_widths"):
            return getattr(self, key)
        return [s[key] for s in self.states]


class _ByteLRU:
    """An LRU dict bounded by the total ``nbytes()`` of its values (0 disables it)."""

    def __init__(self, capacity_bytes: int):
        self.capacity = int(capacity_bytes)
        self._items: OrderedDict[str, _CachedImage] = OrderedDict()
        self.bytes = 0

    def get(self, key: str) -> _CachedImage | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: str, item: _CachedImage) -> None:
        size = item.nbytes()
        if size > self.capacity:
            return
        if key in self._items:
            self.bytes -= self._items.pop(key).nbytes()
        while self._items and self.bytes + size > self.capacity:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.nbytes()
        self._items[key] = item
        self.bytes += size

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)
