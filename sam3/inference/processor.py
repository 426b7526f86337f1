"""Text- and box-prompted detection on images, plus clicks, with one backbone pass per image.

Usage (the official ``Sam3Processor`` API)::

    processor = Sam3Processor(model)
    state = processor.set_image(image)              # PIL / HxWx3 numpy / CHW tensor
    state = processor.set_text_prompt("a dog", state)
    state["masks"], state["boxes"], state["scores"]  # or state.masks, state.boxes, state.scores
    masks, ious, low_res = processor.predict_inst(state, point_coords=[[x, y]], point_labels=[1])

Results follow the official processor (kept queries in query order, no NMS, no hole filling):

* ``scores`` (N,) = sigmoid(class logit) * sigmoid(presence logit), kept when > the threshold (strict);
* ``boxes`` (N, 4) xyxy in original-image pixels (float, not clipped);
* ``masks_logits`` (N, 1, H, W): despite the official name these are *probabilities* (sigmoid of the
  bilinearly upsampled mask logits); ``mask_probs`` is the honest alias;
* ``masks`` (N, 1, H, W) bool = probabilities > 0.5. The singleton axis is kept for compatibility with
  code written against the official processor; ``masks_hw`` gives the (N, H, W) view.

Differences from the official processor, all on purpose:

* HxWx3 numpy arrays are read as HxWx3 (the official code takes H, W from ``shape[-2:]``);
* ``set_confidence_threshold`` re-filters the cached per-query outputs instead of re-running the
  detector (same numbers: the detector is deterministic and the threshold is applied last);
* image features are cached (LRU, bounded in bytes, keyed by a hash of the decoded pixels) and so are
  text features (per prompt string); ``cache_stats()`` reports hits and misses;
* ``set_image`` runs the ViT trunk only; each neck (the detector's for prompts, the tracker's for clicks)
  runs on the image's first prompt or click that needs it, so a click-only image never pays for the
  detector neck (``lazy_necks=False`` makes both at once, as the official processor does; same results);
* states are typed dataclasses (``ImageState``) that also answer ``state["key"]``;
* state belongs to the precision it was made under: the caches keep one entry per autocast dtype, and a
  state encoded under bf16 autocast used by a call without it (or the other way round) raises
  :class:`PrecisionMismatch` instead of failing with a dtype error inside the model.

Everything runs under ``torch.inference_mode``; no autocast is entered here: the caller's context decides
(none: fp32, like the oracle on CPU; the server enters ``Precision.context()`` around every call).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from sam3.device import PrecisionMismatch, autocast_dtype_in_effect, describe_compute, upload
from sam3.inference.image_state import ImageBatchState, ImageState, _ByteLRU, _CachedImage, _Detections
from sam3.inference.interactive import InteractivePredictor, SamImageFeatures
from sam3.inference.transforms import ImageLike, preprocess, to_uint8_chw
from sam3.modeling.outputs import BackboneFeatures, GeometricPrompt, TextFeatures
from sam3.ops.boxes import box_cxcywh_to_xyxy

# The text the official processor encodes when only boxes are given.
VISUAL_ONLY_TEXT = "visual"
DEFAULT_FEATURE_CACHE_BYTES = 1 << 30
DEFAULT_TEXT_CACHE_ENTRIES = 256


__all__ = ["ImageBatchState", "ImageState", "PrecisionMismatch", "Sam3Processor", "mask_probabilities"]


class Sam3Processor:
    """Image-level SAM 3 inference around a :class:`~sam3.modeling.sam3_model.Sam3Model`.

    ``resolution`` defaults to the model's input size; ``device`` to the model's device.
    ``feature_cache_bytes`` bounds the image-feature cache (about 250 MB per image for the released
    model; 0 disables it), ``text_cache_entries`` the text-feature cache. ``lazy_necks`` makes each neck on
    its first use (default) rather than in ``set_image``.
    """

    def __init__(
        self,
        model,
        resolution: int | None = None,
        confidence_threshold: float = 0.5,
        device: str | torch.device | None = None,
        feature_cache_bytes: int = DEFAULT_FEATURE_CACHE_BYTES,
        text_cache_entries: int = DEFAULT_TEXT_CACHE_ENTRIES,
        lazy_necks: bool = True,
    ):
        self.model = model
        self.resolution = int(resolution or model.config.image_size)
        self.device = torch.device(device) if device is not None else model.device
        self.confidence_threshold = float(confidence_threshold)
        self._interactive = InteractivePredictor(model.tracker) if model.tracker is not None else None
        self._images = _ByteLRU(feature_cache_bytes)
        self._texts: OrderedDict[tuple[str, torch.dtype | None], TextFeatures] = OrderedDict()
        self._text_capacity = int(text_cache_entries)
        self.lazy_necks = bool(lazy_necks)
        self._lock = threading.Lock()
        self.backbone_runs = 0  # images encoded by the vision backbone
        self.text_runs = 0  # prompts encoded by the text encoder
        self.detector_runs = 0  # grounding forwards (encoder + decoder + heads)
        self._stats = {"image_hits": 0, "image_misses": 0, "text_hits": 0, "text_misses": 0}

    # ------------------------------------------------------------------ images
    @torch.inference_mode()
    def set_image(self, image: ImageLike, state: ImageState | None = None) -> ImageState:
        """Encode an image (or take its features from the cache) -> a fresh :class:`ImageState`.

        A ``state`` passed in is accepted for API compatibility and replaced by the new one.
        """
        pixels = to_uint8_chw(image)
        key = self._image_key(pixels)
        cached = self._lookup_image(key)
        if cached is None:
            cached = self._encode_images([pixels], [key])[0]
        return ImageState(int(pixels.shape[1]), int(pixels.shape[2]), key, cached)

    def _compute(self) -> torch.dtype | None:
        """The autocast dtype this call runs under (None: plain fp32)."""
        return autocast_dtype_in_effect(self.device)

    def _entry_key(self, image_id: str) -> str:
        """The cache key of an image's entry under the current precision (the bare id under fp32)."""
        compute = self._compute()
        return image_id if compute is None else f"{image_id}@{compute}"

    def restore_image(self, image_id: str) -> ImageState | None:
        """A fresh state for an image still in the feature cache (no backbone run), or None once evicted."""
        cached = self._lookup_image(image_id)
        if cached is None:
            return None
        return ImageState(cached.hw[0], cached.hw[1], image_id, cached)

    @torch.inference_mode()
    def set_image_batch(self, images: list[ImageLike], state=None) -> ImageBatchState:
        """Encode several images; the uncached ones go through the backbone as one batch."""
        if not isinstance(images, (list, tuple)) or not images:
            raise ValueError("set_image_batch expects a non-empty list of images")
        pixels = [to_uint8_chw(im) for im in images]
        keys = [self._image_key(p) for p in pixels]
        cached: dict[str, _CachedImage] = {}
        for key in keys:
            if key not in cached:
                hit = self._lookup_image(key)
                if hit is not None:
                    cached[key] = hit
        todo = list(dict.fromkeys(k for k in keys if k not in cached))
        if todo:
            by_key = dict(zip(keys, pixels))  # equal keys hold equal pixels
            for key, item in zip(todo, self._encode_images([by_key[k] for k in todo], todo)):
                cached[key] = item
        states = [ImageState(int(p.shape[1]), int(p.shape[2]), k, cached[k]) for p, k in zip(pixels, keys)]
        return ImageBatchState(states)

    def _image_key(self, pixels: torch.Tensor) -> str:
        """32 hex digits: a hash of the decoded pixels, their shape and the model resolution."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{tuple(pixels.shape)}:{self.resolution}:".encode())
        digest.update(pixels.numpy().tobytes())
        return digest.hexdigest()

    def _lookup_image(self, key: str) -> _CachedImage | None:
        entry = self._entry_key(key)
        with self._lock:
            hit = self._images.get(entry)
            self._stats["image_hits" if hit is not None else "image_misses"] += 1
        return hit

    def _encode_images(self, pixels: list[torch.Tensor], keys: list[str]) -> list[_CachedImage]:
        """One trunk pass over a batch; each image's entry is stored in the cache (necks made later when lazy)."""
        mean, std = self.model.config.image_mean, self.model.config.image_std
        batch = torch.cat([preprocess(p.to(self.device), self.resolution, mean, std) for p in pixels])
        trunk = self.model.encode_trunk(batch)
        with self._lock:
            self.backbone_runs += len(pixels)
        items = []
        for i, key in enumerate(keys):
            hw = (int(pixels[i].shape[1]), int(pixels[i].shape[2]))
            # A copy when batched, so that one entry does not keep the whole batch's trunk map alive.
            one = trunk[i : i + 1] if len(pixels) == 1 else trunk[i : i + 1].clone()
            item = _CachedImage(hw, one, with_tracker=self._interactive is not None, compute=self._compute())
            if not self.lazy_necks:
                self._detector_features(item)
                if item.with_tracker:
                    self._sam_features(item)
            entry = self._entry_key(key)
            with self._lock:
                self._images.put(entry, item)
            items.append(item)
        return items

    def _detector_features(self, item: _CachedImage) -> BackboneFeatures:
        features = item.detector_features(self.model)
        self._trim()
        return features

    def sam_features(self, state: ImageState) -> SamImageFeatures:
        """The click predictor's features of the state's image (its tracker neck runs on first use)."""
        self._check_state(state)
        if self._interactive is None:
            raise RuntimeError("click features need a model built with enable_inst_interactivity=True")
        return self._sam_features(state.cached)

    def _sam_features(self, item: _CachedImage) -> SamImageFeatures:
        features = item.sam_features(self.model, self._interactive)
        self._trim()
        return features

    def _check_state(self, state) -> None:
        if not isinstance(state, ImageState):
            raise ValueError("call set_image first and pass the ImageState it returned")
        made, now = state.cached.compute, self._compute()
        if made != now:
            raise PrecisionMismatch(
                f"this image was encoded under {describe_compute(made)} but this call runs under "
                f"{describe_compute(now)}: make the call inside the same precision context as set_image "
                "(the server's Precision.context(), or the same torch.autocast), or call set_image again here"
            )

    def _trim(self) -> None:
        """Evict what an entry that may just have grown pushed over the capacity (a sum over a few entries)."""
        with self._lock:
            self._images.trim()

    # ------------------------------------------------------------------ prompts
    @torch.inference_mode()
    def set_text_prompt(self, prompt: str, state):
        """Set (replace) the text prompt and run the detector. Box prompts already given are kept."""
        if isinstance(state, ImageBatchState):
            for s in state:
                self.set_text_prompt(prompt, s)
            return state
        self._check_state(state)
        if not isinstance(prompt, str):
            raise ValueError(f"the text prompt must be a string, got {type(prompt).__name__}")
        state.text_prompt, state.text = prompt, self._text_features(prompt)
        return self._ground(state)

    @torch.inference_mode()
    def add_geometric_prompt(self, box, label: bool, state):
        """Add one box (normalised cx, cy, w, h in [0, 1]; ``label`` True = positive) and run the detector.

        Without a text prompt the dummy text "visual" is used, as in the official processor.
        """
        if isinstance(state, ImageBatchState):
            for s in state:
                self.add_geometric_prompt(box, label, s)
            return state
        self._check_state(state)
        values = [float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)]
        if len(values) != 4 or not all(np.isfinite(values)):
            raise ValueError(f"box must be 4 finite numbers (cx, cy, w, h normalised), got {box!r}")
        if state.text is None:
            state.text = self._text_features(VISUAL_ONLY_TEXT)
        state.prompt_boxes.append((tuple(values), bool(label)))
        return self._ground(state)

    @torch.inference_mode()
    def set_prompts(self, state: ImageState, text: str | None = None, boxes=(), box_labels=()) -> ImageState:
        """Replace every prompt at once (text, and exemplar boxes with 1 / 0 labels) and run the detector once.

        The result equals ``reset_all_prompts`` + ``set_text_prompt`` + one ``add_geometric_prompt`` per box
        (whose last detector run is the only one that counts), without the intermediate runs.
        """
        self._check_state(state)
        boxes, box_labels = list(boxes), list(box_labels)
        if len(boxes) != len(box_labels):
            raise ValueError(f"{len(boxes)} boxes but {len(box_labels)} box labels")
        if text is None and not boxes:
            raise ValueError("give a text prompt, boxes, or both")
        if text is not None and not isinstance(text, str):
            raise ValueError(f"the text prompt must be a string, got {type(text).__name__}")
        self.reset_all_prompts(state)
        for box, label in zip(boxes, box_labels):
            values = [float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)]
            if len(values) != 4 or not all(np.isfinite(values)):
                raise ValueError(f"box must be 4 finite numbers (cx, cy, w, h normalised), got {box!r}")
            state.prompt_boxes.append((tuple(values), bool(label)))
        state.text_prompt = text
        state.text = self._text_features(text if text is not None else VISUAL_ONLY_TEXT)
        return self._ground(state)

    @torch.inference_mode()
    def set_confidence_threshold(self, threshold: float, state=None):
        """Set the score threshold; a state with results is re-filtered from its cached detections."""
        self.confidence_threshold = float(threshold)
        if isinstance(state, ImageBatchState):
            for s in state:
                self.set_confidence_threshold(threshold, s)
        elif state is not None and state.detections is not None:
            self._filter(state)
        return state

    def reset_all_prompts(self, state) -> None:
        """Forget the text and box prompts and the results (the image features stay)."""
        for s in state if isinstance(state, ImageBatchState) else [state]:
            s.text_prompt = s.text = s.detections = None
            s.prompt_boxes = []
            s.masks = s.masks_logits = s.boxes = s.scores = s.low_res_masks = None

    def _text_features(self, prompt: str) -> TextFeatures:
        key = (prompt, self._compute())
        with self._lock:
            hit = self._texts.get(key)
            if hit is not None:
                self._texts.move_to_end(key)
            self._stats["text_hits" if hit is not None else "text_misses"] += 1
        if hit is not None:
            return hit
        feats = self.model.encode_text([prompt])
        with self._lock:
            self.text_runs += 1
            if self._text_capacity > 0:
                self._texts[key] = feats
                while len(self._texts) > self._text_capacity:
                    self._texts.popitem(last=False)
        return feats

    def _geometric_prompt(self, state: ImageState) -> GeometricPrompt:
        if not state.prompt_boxes:
            return GeometricPrompt.empty(1, self.device)
        boxes = upload([b for b, _ in state.prompt_boxes], self.device, torch.float32)
        labels = upload([int(lab) for _, lab in state.prompt_boxes], self.device, torch.long)
        return GeometricPrompt.from_boxes(boxes[None], labels[None])

    # ------------------------------------------------------------------ detection
    def _ground(self, state: ImageState) -> ImageState:
        features = self._detector_features(state.cached)
        out = self.model.forward_grounding(features, state.text, self._geometric_prompt(state))
        with self._lock:
            self.detector_runs += 1
        h, w = state.original_height, state.original_width
        scale = upload([w, h, w, h], out.pred_boxes.device, torch.float32)
        state.detections = _Detections(
            scores=out.scores[0],
            boxes=box_cxcywh_to_xyxy(out.pred_boxes[0]) * scale,
            mask_logits=out.pred_masks[0],
        )
        return self._filter(state)

    def _filter(self, state: ImageState) -> ImageState:
        det = state.detections
        keep = det.scores > self.confidence_threshold
        state.low_res_masks = det.mask_logits[keep]
        probs = mask_probabilities(state.low_res_masks, (state.original_height, state.original_width))
        state.masks_logits = probs
        state.masks = probs > 0.5
        state.boxes = det.boxes[keep]
        state.scores = det.scores[keep]
        return state

    # ------------------------------------------------------------------ clicks
    @torch.inference_mode()
    def predict_inst(
        self,
        state: ImageState,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks from clicks / a box (xyxy pixels) / a previous low-res mask, on the state's cached features.

        See :meth:`sam3.inference.interactive.InteractivePredictor.predict_inst` for shapes; returns
        (masks (K, H, W), iou (K,), low_res_logits (K, 4g, 4g)) as float32 numpy arrays.
        """
        self._check_state(state)
        if self._interactive is None:
            raise RuntimeError("predict_inst needs a model built with enable_inst_interactivity=True")
        return self._interactive.predict_inst(
            self._sam_features(state.cached),
            (state.original_height, state.original_width),
            point_coords=point_coords,
            point_labels=point_labels,
            box=box,
            mask_input=mask_input,
            multimask_output=multimask_output,
            return_logits=return_logits,
            normalize_coords=normalize_coords,
        )

    def predict_inst_batch(
        self,
        state: ImageBatchState,
        point_coords_batch=None,
        point_labels_batch=None,
        box_batch=None,
        mask_input_batch=None,
        **kwargs,
    ) -> tuple[list, list, list]:
        """``predict_inst`` for each image of a batch state; per-image prompt lists (None entries allowed)."""
        pick = lambda seq, i: None if seq is None else seq[i]
        results = [
            self.predict_inst(
                s,
                pick(point_coords_batch, i),
                pick(point_labels_batch, i),
                pick(box_batch, i),
                pick(mask_input_batch, i),
                **kwargs,
            )
            for i, s in enumerate(state)
        ]
        return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results]

    # ------------------------------------------------------------------ bookkeeping
    def cache_stats(self) -> dict[str, int]:
        """Cache hits / misses and sizes, and how often each part of the model ran."""
        with self._lock:
            return {
                **self._stats,
                "image_entries": len(self._images),
                "image_bytes": self._images.bytes,
                "image_capacity_bytes": self._images.capacity,
                "text_entries": len(self._texts),
                "backbone_runs": self.backbone_runs,
                "text_runs": self.text_runs,
                "detector_runs": self.detector_runs,
            }

    def clear_cache(self) -> None:
        with self._lock:
            self._images.clear()
            self._texts.clear()


def mask_probabilities(low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(N, 4g, 4g) detector mask logits -> (N, 1, H, W) probabilities at the image size (> 0.5 is the mask).

    Each mask is resized on its own, so any subset of a detection gives the same pixels as the whole.
    """
    return F.interpolate(low_res.unsqueeze(1), hw, mode="bilinear", align_corners=False).sigmoid()
