"""The per-image state of :class:`~sam3.inference.processor.Sam3Processor`: the cached backbone outputs of one
image (``CachedImage``), the byte-bounded LRU that holds them (``ByteLRU``), a detection's outputs, and the
typed states the processor hands out (``ImageState``, ``ImageBatchState``; they also answer ``state["key"]``
like the official dictionaries).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from sam3.inference.interactive import InteractivePredictor, SamImageFeatures
from sam3.modeling.outputs import BackboneFeatures, TextFeatures


@dataclass(eq=False)
class _CachedImage:
    """What one backbone pass made of one image: the trunk map, and each neck's features once asked for.

    ``trunk`` (1, C_trunk, g, g) is kept until every neck this image may need has been made from it, then
    dropped. ``features`` holds the detector levels (batch of one) and ``sam`` the click predictor's projected
    tracker levels; each is None until first used (or made at once when the processor is not lazy).
    ``with_tracker``: the model has a tracker, so ``sam`` can be made. The fills run under the entry's own
    lock, so two requests on one image make each neck once.
    """

    hw: tuple[int, int]  # original (height, width)
    trunk: torch.Tensor | None = field(default=None, repr=False)
    compute: torch.dtype | None = None  # the autocast dtype it was encoded under (None: plain fp32)
    with_tracker: bool = False
    features: BackboneFeatures | None = field(default=None, repr=False)
    sam: SamImageFeatures | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def detector_features(self, model) -> BackboneFeatures:
        """The detector levels, made from the trunk map on first use (``model``: a ``Sam3Model``)."""
        with self._lock:
            if self.features is None:
                with torch.inference_mode():
                    fpn, pos = model.detector_levels(self.trunk)
                self.features = BackboneFeatures(fpn, pos)
                self._drop_trunk()
            return self.features

    def sam_features(self, model, interactive: InteractivePredictor) -> SamImageFeatures:
        """The click predictor's features, made from the trunk map on first use."""
        if not self.with_tracker:
            raise RuntimeError("this image has no click features: the model has no tracker")
        with self._lock:
            if self.sam is None:
                with torch.inference_mode():
                    levels = model.tracker_levels(self.trunk)
                    self.sam = interactive.prepare_levels(levels)
                self._drop_trunk()
            return self.sam

    def _drop_trunk(self) -> None:
        if self.features is not None and (self.sam is not None or not self.with_tracker):
            self.trunk = None

    def nbytes(self) -> int:
        size = self.trunk.numel() * self.trunk.element_size() if self.trunk is not None else 0
        size += self.features.nbytes() if self.features is not None else 0
        return size + (self.sam.nbytes() if self.sam is not None else 0)


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

    ``cached`` holds the image's features, shared with the processor's cache (its necks are made on first
    use: ``Sam3Processor`` asks it for them). ``prompt_boxes`` lists (normalised cxcywh, positive?).
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
    """An LRU dict bounded by the total ``nbytes()`` of its values (0 disables it).

    Entries grow after they are stored (a neck made on first use), so sizes are read when needed rather
    than remembered: :meth:`trim` evicts after a growth, and every :meth:`put` sees the current sizes.
    """

    def __init__(self, capacity_bytes: int):
        self.capacity = int(capacity_bytes)
        self._items: OrderedDict[str, _CachedImage] = OrderedDict()

    @property
    def bytes(self) -> int:
        return sum(item.nbytes() for item in self._items.values())

    def get(self, key: str) -> _CachedImage | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: str, item: _CachedImage) -> None:
        if item.nbytes() > self.capacity:
            return
        self._items.pop(key, None)
        self._items[key] = item
        self.trim()

    def trim(self) -> None:
        """Evict the least recently used entries until the total fits the capacity."""
        total = self.bytes
        while self._items and total > self.capacity:
            _, old = self._items.popitem(last=False)
            total -= old.nbytes()

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
