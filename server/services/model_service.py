"""The image model behind the HTTP routes: loading, status, and serialised inference off the event loop.

One model call runs at a time. Requests wait on an ``anyio.Lock`` (FIFO, on the event loop, so waiting
costs no thread), then the call runs in a worker thread under a ``threading.Lock`` as well, so a request
whose client disconnects can never let two calls overlap. At most ``SAM_MAX_QUEUE`` requests wait; more get 429.

The processor keeps an LRU cache of image features keyed on the image, so repeated requests for the same
image (a user clicking again and again) skip the vision backbone; ``backbone_runs`` counts the real runs.

If the model cannot be loaded (no checkpoint and no download, a corrupt file, a bad device setting) the
service stays up: ``error`` holds the reason and every model call raises 503 with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import numpy as np
from PIL import Image

from server.errors import TooBusy, Unavailable
from server.settings import Settings

log = logging.getLogger("sam3.server")
T = TypeVar("T")


@dataclass(frozen=True)
class MaskCandidate:
    """One interactive mask: (H, W) bool at the image size, and its predicted IoU."""

    mask: np.ndarray
    score: float


@dataclass(frozen=True)
class Detection:
    """One text-prompted object: (H, W) bool mask, pixel xyxy box (clipped to the image), score."""

    mask: np.ndarray
    box: list[float]
    score: float


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ModelService:
    """Owns the image model and its processor; every public inference method is async and serialised."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.model: Any = None
        self.processor: Any = None
        self.device: str = "cpu"
        self.error: str | None = None
        self.loading = False
        self._async_lock = anyio.Lock()
        self._thread_lock = threading.Lock()
        self._waiting = 0
        self._loaded_event = threading.Event()
        # Observer of every model call: (seconds waited for the lock, seconds holding it); set for metrics.
        self.on_call: Callable[[float, float], None] | None = None

    # ------------------------------------------------------------------ loading
    @property
    def loaded(self) -> bool:
        return self.model is not None and self.processor is not None

    def load(self) -> None:
        """Build the model and processor (blocking). Never raises: failure is recorded in ``error``."""
        self.loading = True
        self.error = None
        started = time.perf_counter()
        try:
            from sam3.device import device_name, resolve_device

            device = resolve_device(self.settings.device)
            self.device = device_name(device)
            checkpoint = None if self.settings.random_weights else self._find_checkpoint()
            from sam3.build import build_sam3_image_model
            from sam3.inference.processor import Sam3Processor

            model = build_sam3_image_model(
                checkpoint_path=checkpoint,
                device=device,
                enable_inst_interactivity=True,
                load_from_HF=False,
                preset=self.settings.preset,
                random_weights=self.settings.random_weights,
            )
            if self.settings.random_weights:  # dev mode: spread the random scores so objects show up
                from sam3.dev_weights import make_visible

                make_visible(model)
            model.eval()
            processor = self._make_processor(Sam3Processor, model)
            with self._thread_lock:
                self.model, self.processor = model, processor
            log.info(
                "model loaded: preset=%s device=%s checkpoint=%s in %.1f s",
                self.settings.preset, self.device, checkpoint or "random weights", time.perf_counter() - started,
            )
        except Exception as exc:  # any failure must leave a running service that says why
            self.error = describe_error(exc)
            log.error("model not loaded: %s", self.error)
        finally:
            self.loading = False
            self._loaded_event.set()

    def _make_processor(self, processor_cls: type, model: Any) -> Any:
        """Build the processor with the configured confidence and feature-cache size."""
        return processor_cls(
            model,
            confidence_threshold=self.settings.confidence,
            feature_cache_bytes=self.settings.image_cache_mb * 1024 * 1024,
        )

    def _find_checkpoint(self) -> str:
        """``SAM3_CHECKPOINT``, downloading ``facebook/sam3`` into its folder when ``SAM3_AUTO_DOWNLOAD`` allows
        (the one lookup, ``sam3.checkpoint.resolve_checkpoint``: fast failure offline, both ways out named)."""
        from sam3.checkpoint import resolve_checkpoint

        found = resolve_checkpoint(self.settings.checkpoint, self.settings.auto_download, download_missing=True)
        return str(found)

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Block until a load attempt has finished (for tests and scripts)."""
        return self._loaded_event.wait(timeout)

    def require_loaded(self) -> None:
        if self.loaded:
            return
        if self.loading or (self.error is None and not self._loaded_event.is_set()):
            raise Unavailable("model not loaded: still loading, retry shortly", headers={"Retry-After": "5"})
        raise Unavailable(f"model not loaded: {self.error}")

    # ------------------------------------------------------------------ status
    @property
    def backbone_runs(self) -> int:
        return int(getattr(self.processor, "backbone_runs", 0) or 0)

    def cache_stats(self) -> dict | None:
        stats = getattr(self.processor, "cache_stats", None)
        if stats is None:
            return None
        value = stats() if callable(stats) else stats
        if hasattr(value, "__dataclass_fields__"):
            from dataclasses import asdict

            value = asdict(value)
        return dict(value) if isinstance(value, dict) else {"stats": str(value)}

    # ------------------------------------------------------------------ serialised execution
    @property
    def queue_depth(self) -> int:
        """Model calls waiting for the lock or running under it."""
        return self._waiting

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread, one model call at a time (429 when too many wait)."""
        if self._waiting >= self.settings.max_queue:
            raise TooBusy(
                f"request queue full: {self._waiting} requests are waiting for the model (SAM_MAX_QUEUE)",
                retry_after_s=2,
            )
        self._waiting += 1
        queued = time.perf_counter()
        try:
            async with self._async_lock:
                locked = time.perf_counter()
                try:
                    # run_sync is not abandoned on cancellation: the lock is held until the thread is done.
                    return await anyio.to_thread.run_sync(self._locked, fn, *args)
                finally:
                    if self.on_call is not None:
                        self.on_call(locked - queued, time.perf_counter() - locked)
        finally:
            self._waiting -= 1

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self._thread_lock:
            return fn(*args)

    # ------------------------------------------------------------------ inference (run inside call())
    async def predict_mask(
        self,
        image: Image.Image,
        points: list[tuple[float, float]],
        labels: list[int],
        box_xyxy: list[float] | None,
        multimask: bool,
    ) -> list[MaskCandidate]:
        """Click / box segmentation: candidates sorted best first (3 with ``multimask``, else 1)."""
        self.require_loaded()
        return await self.call(self._predict_mask_sync, image, points, labels, box_xyxy, multimask)

    def _predict_mask_sync(self, image, points, labels, box_xyxy, multimask) -> list[MaskCandidate]:
        state = self.processor.set_image(image)
        masks, ious, _ = self.processor.predict_inst(
            state,
            point_coords=np.asarray(points, dtype=np.float32).reshape(-1, 2) if points else None,
            point_labels=np.asarray(labels, dtype=np.int32) if points else None,
            box=np.asarray(box_xyxy, dtype=np.float32) if box_xyxy is not None else None,
            mask_input=None,
            multimask_output=multimask,
            return_logits=False,
            normalize_coords=True,
        )
        masks = np.asarray(masks)
        ious = np.asarray(ious, dtype=np.float64).reshape(-1)
        masks = masks.reshape(-1, *masks.shape[-2:])
        order = np.argsort(-ious, kind="stable")
        return [MaskCandidate(masks[i] > 0.5 if masks.dtype != np.bool_ else masks[i], float(ious[i])) for i in order]

    async def detect(self, image: Image.Image, text: str, confidence: float) -> list[Detection]:
        """Text-prompted detection: every object above ``confidence``, highest score first."""
        self.require_loaded()
        return await self.call(self._detect_sync, image, text, confidence)

    def _detect_sync(self, image: Image.Image, text: str, confidence: float) -> list[Detection]:
        processor = self.processor
        state = processor.set_image(image)
        if hasattr(processor, "reset_all_prompts"):
            processor.reset_all_prompts(state)  # a cached state may still hold an earlier request's prompt
        # Threshold first: setting it after the prompt would run the detector a second time.
        processor.set_confidence_threshold(confidence, state)
        state = processor.set_text_prompt(text, state) or state
        width, height = image.size
        masks = to_numpy(state["masks"])
        boxes = to_numpy(state["boxes"]).reshape(-1, 4).astype(np.float64)
        scores = to_numpy(state["scores"]).reshape(-1).astype(np.float64)
        if masks.ndim == 4:  # (N, 1, H, W)
            masks = masks[:, 0]
        masks = masks.reshape(-1, height, width) if masks.size else np.zeros((0, height, width), bool)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        order = np.argsort(-scores, kind="stable")
        return [Detection(masks[i].astype(bool), [float(v) for v in boxes[i]], float(scores[i])) for i in order]


def to_numpy(value: Any) -> np.ndarray:
    """A tensor (any device / dtype) or array -> numpy; bf16 goes through fp32 since numpy has no bf16."""
    if hasattr(value, "detach"):
        value = value.detach()
        if value.dtype.is_floating_point:
            value = value.float()
        value = value.cpu().numpy()
    return np.asarray(value)
