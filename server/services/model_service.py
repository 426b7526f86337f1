"""The image model behind the HTTP routes: loading, status, and serialised inference off the event loop.

One model call runs at a time. Requests wait on an ``anyio.Lock`` (FIFO, on the event loop, so waiting
costs no thread), then the call runs in a worker thread under a ``threading.Lock`` as well, so a request
whose client disconnects can never let two calls overlap. At most ``SAM_MAX_QUEUE`` requests wait; more get 429.

An image request takes its place in that queue BEFORE its upload is read or decoded: the bytes stay in
Starlette's spooled upload file while it waits, and the decode runs inside the slot, so at most one decoded
image exists at a time however many requests wait (:meth:`ModelService.run_on_image`).

The processor keeps an LRU cache of image features keyed on the image (the ``image_id`` of the answers), so
repeated requests for the same image (a user clicking again and again, or sending only the ``image_id``) skip
the vision backbone; ``backbone_runs`` counts the real runs. Two small caches sit beside it here: the last
low-resolution logits of each client-named object (``object_id``, for ``refine``) and the kept detections of
recent concept prompts (so ``object_indices`` merges without running the detector again).

If the model cannot be loaded (no checkpoint and no download, a corrupt file, a bad device setting) the
service stays up: ``error`` holds the reason and every model call raises 503 with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import numpy as np

from server.errors import BadValue, NotFound, TooBusy, Unavailable
from server.imaging import ImageLimits, decode_image
from server.prompts import validate_labels, validate_points
from server.services.image_requests import ClickPrompt, ClickResult, Concept, Detection, DetectResult, MaskCandidate
from server.services.serving import call_context, prepare_for_serving
from server.settings import Settings

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image as PILImage

    from sam3.device import Precision
    from sam3.inference.processor import ImageState, Sam3Processor
    from sam3.modeling.sam3_model import Sam3Model

log = logging.getLogger("sam3.server")
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Refinement logits kept (one (4g, 4g) float map per (image_id, object_id): 330 kB each for the released model).
MAX_OBJECT_LOGITS = 256
# Kept detections of recent concept requests (low-res logits, boxes, scores of the kept objects only).
DETECTION_CACHE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class _KeptObjects:
    """The kept objects of one concept request, sorted as answered: what ``object_indices`` selects from.

    low_res (N, 4g, 4g) mask logits, boxes (N, 4) clipped pixel xyxy, scores (N,), prompt_index (N,).
    """

    low_res: torch.Tensor
    boxes: np.ndarray
    scores: np.ndarray
    prompt_index: np.ndarray
    counts: list[int]

    def nbytes(self) -> int:
        return int(self.low_res.numel() * self.low_res.element_size()) + self.boxes.nbytes + self.scores.nbytes


class _LRU(Generic[K, V]):
    """A small LRU dict bounded by entry count and, when ``size`` is given, by total size."""

    def __init__(self, max_entries: int, max_size: int | None = None, size: Callable[[V], int] | None = None):
        self.max_entries, self.max_size, self._size = max_entries, max_size, size
        self._items: OrderedDict[K, V] = OrderedDict()
        self.total = 0

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        weight = self._size(value) if self._size else 0
        if self.max_size is not None and weight > self.max_size:
            return
        if key in self._items:
            self.total -= self._size(self._items.pop(key)) if self._size else 0
        self._items[key] = value
        self.total += weight
        while len(self._items) > self.max_entries or (self.max_size is not None and self.total > self.max_size):
            _, old = self._items.popitem(last=False)
            self.total -= self._size(old) if self._size else 0

    def __len__(self) -> int:
        return len(self._items)


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ModelService:
    """Owns the image model and its processor; every public inference method is async and serialised."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.model: Sam3Model | None = None
        self.processor: Sam3Processor | None = None
        self.device: str = "cpu"
        self.precision: Precision | None = None  # resolved at load; entered around every model call
        self.error: str | None = None
        self.loading = False
        self._async_lock = anyio.Lock()
        self._thread_lock = threading.Lock()
        self._waiting = 0
        self._loaded_event = threading.Event()
        # Observer of every model call: (seconds waited for the lock, seconds holding it); set for metrics.
        self.on_call: Callable[[float, float], None] | None = None
        # Both only touched under _thread_lock (inside the model slot).
        self._object_logits: _LRU[tuple[str, str], np.ndarray] = _LRU(MAX_OBJECT_LOGITS)
        self._kept: _LRU[tuple, _KeptObjects] = _LRU(64, DETECTION_CACHE_BYTES, _KeptObjects.nbytes)

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
            from sam3.device import cpu_info, device_name, resolve_device, resolve_precision

            device = resolve_device(self.settings.device)
            self.device = device_name(device)
            cpu = cpu_info(self.settings.cpu_bf16) if device.type == "cpu" else None
            precision = resolve_precision(self.settings.precision, device, cpu)
            checkpoint = None if self.settings.random_weights else self._find_checkpoint()
            from sam3.inference.processor import Sam3Processor
            from sam3.registry import build_model

            import torch

            # dev mode draws the same random weights every start (a fixed seed on a forked RNG, nothing global),
            # so what a person or a test sees does not change from run to run
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = build_model(  # SAM3_MODEL_VERSION's builder: detector and tracker (clicks, video)
                    self.settings.model_version,
                    checkpoint_path=checkpoint,
                    device=device,
                    load_from_HF=False,
                    preset=self.settings.preset,
                    random_weights=self.settings.random_weights,
                )
            if self.settings.random_weights:  # dev mode: spread the random scores so objects show up
                from sam3.dev_weights import make_visible

                make_visible(model)
            model.eval()
            prepare_for_serving(model, precision, self.settings)  # precision, compile, threads, warm-up
            self.precision = precision
            processor = self._make_processor(Sam3Processor, model)
            with self._thread_lock:
                self.model, self.processor = model, processor
            log.info(
                "model loaded: %s preset=%s device=%s checkpoint=%s in %.1f s",
                self.settings.model_version,
                self.settings.preset,
                self.device,
                checkpoint or "random weights",
                time.perf_counter() - started,
            )
        except Exception as exc:  # any failure must leave a running service that says why
            self.error = describe_error(exc)
            log.error("model not loaded: %s", self.error)
        finally:
            self.loading = False
            self._loaded_event.set()

    def _make_processor(self, processor_cls: type[Sam3Processor], model: Sam3Model) -> Sam3Processor:
        """Build the processor with the configured confidence and feature-cache size."""
        return processor_cls(
            model,
            confidence_threshold=self.settings.confidence,
            feature_cache_bytes=self.settings.image_cache_mb * 1024 * 1024,
            lazy_necks=self.settings.lazy_necks,
        )

    def _find_checkpoint(self) -> str:
        """``SAM3_CHECKPOINT``, downloading the version's file (``facebook/sam3`` or ``facebook/sam3.1``) into its
        folder when ``SAM3_AUTO_DOWNLOAD`` allows
        (the one lookup, ``sam3.checkpoint.resolve_checkpoint``: fast failure offline, both ways out named)."""
        from sam3.checkpoint import resolve_checkpoint
        from sam3.registry import get_version

        version = get_version(self.settings.model_version)
        found = resolve_checkpoint(
            self.settings.checkpoint, self.settings.auto_download, download_missing=True, version=version
        )
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
        return 0 if self.processor is None else self.processor.backbone_runs

    def cache_stats(self) -> dict | None:
        return None if self.processor is None else dict(self.processor.cache_stats())

    # ------------------------------------------------------------------ serialised execution
    @property
    def queue_depth(self) -> int:
        """Model calls waiting for the lock or running under it."""
        return self._waiting

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """A place in the model queue (429 when ``SAM_MAX_QUEUE`` requests already wait), then the model lock.

        ``on_call`` (metrics) hears how long the request waited for the lock and how long it held it.
        """
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
                    yield
                finally:
                    if self.on_call is not None:
                        self.on_call(locked - queued, time.perf_counter() - locked)
        finally:
            self._waiting -= 1

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread, one model call at a time (429 when too many wait)."""
        async with self._slot():
            # run_sync is not abandoned on cancellation: the lock is held until the thread is done.
            return await anyio.to_thread.run_sync(self._locked, fn, *args)

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        # The resolved precision (autocast, TF32; nothing for fp32 / int8) and SAM3_NUM_THREADS.
        with self._thread_lock, call_context(self.precision, self.settings):
            return fn(*args)

    async def run_on_image(
        self, read: Callable[[], Awaitable[bytes]] | None, image_id: str | None, work: Callable[[ImageState], T]
    ) -> T:
        """Take a model slot, THEN read and decode the upload (or restore ``image_id``), then ``work(state)``.

        ``read`` returns the upload's bytes (it is awaited only once the slot is held); with ``image_id``
        instead, the cached features are used and an evicted id is 404. ``work`` runs in the worker thread
        under the model lock; it may raise the service's 4xx errors.
        """
        self.require_loaded()
        async with self._slot():
            data = await read() if read is not None else None
            return await anyio.to_thread.run_sync(self._locked, self._on_image, data, image_id, work)

    async def run_on_pixels(
        self,
        read: Callable[[], Awaitable[bytes]] | None,
        image_id: str | None,
        work: Callable[[ImageState, PILImage | None], T],
    ) -> T:
        """:meth:`run_on_image` for work that also reads the decoded RGB image (None for an ``image_id``: the
        cache keeps features, not pixels)."""
        self.require_loaded()
        async with self._slot():
            data = await read() if read is not None else None
            return await anyio.to_thread.run_sync(self._locked, self._on_image, data, image_id, work, True)

    def _on_image(
        self, data: bytes | None, image_id: str | None, work: Callable[..., T], with_pixels: bool = False
    ) -> T:
        processor = self._processor()
        if data is None:
            state = processor.restore_image(image_id or "")
            if state is None:
                raise NotFound(
                    f"image_id: {image_id} is not in the image cache (unknown, or evicted); send the image again"
                )
            return work(state, None) if with_pixels else work(state)
        image = decode_image(data, limits=ImageLimits.from_settings(self.settings))
        del data
        state = processor.set_image(image)
        if with_pixels:
            return work(state, image)
        del image  # only the features are kept (in the processor's cache)
        return work(state)

    def _processor(self) -> Sam3Processor:
        if self.processor is None:
            raise Unavailable(f"model not loaded: {self.error or 'still loading'}")
        return self.processor

    # ------------------------------------------------------------------ clicks
    async def predict_mask(
        self, read: Callable[[], Awaitable[bytes]] | None, image_id: str | None, prompt: ClickPrompt
    ) -> ClickResult:
        """Click / box segmentation: candidates sorted best first (3 with ``multimask``, else 1)."""
        return await self.run_on_image(read, image_id, lambda state: self._predict_mask_sync(state, prompt))

    def _predict_mask_sync(self, state: ImageState, prompt: ClickPrompt) -> ClickResult:
        width, height = state.original_width, state.original_height
        points = (
            validate_points(prompt.points, width=width, height=height, max_points=self.settings.max_points)
            if prompt.points is not None
            else []
        )
        labels = validate_labels(prompt.labels, len(points))
        box = prompt.box.to_pixel_xyxy(width, height) if prompt.box is not None else None
        key = (state.image_id, prompt.object_id) if prompt.object_id is not None else None
        previous = self._object_logits.get(key) if key is not None and prompt.refine else None
        masks, ious, low_res = self._processor().predict_inst(
            state,
            point_coords=np.asarray(points, dtype=np.float32).reshape(-1, 2) if points else None,
            point_labels=np.asarray(labels, dtype=np.int32) if points else None,
            box=np.asarray(box, dtype=np.float32) if box is not None else None,
            mask_input=previous[None] if previous is not None else None,
            multimask_output=prompt.multimask,
            return_logits=False,
            normalize_coords=True,
        )
        masks = masks.reshape(-1, height, width)
        ious = ious.astype(np.float64).reshape(-1)
        low_res = low_res.reshape(masks.shape[0], *low_res.shape[-2:])
        order = np.argsort(-ious, kind="stable")
        if key is not None:
            # The best candidate is the next mask input, as in the official interactive predictor's demo.
            self._object_logits.put(key, low_res[order[0]].copy())
        candidates = [MaskCandidate(masks[i] > 0.5, float(ious[i]), low_res[i]) for i in order]
        return ClickResult(state.image_id, width, height, candidates, refined=previous is not None)

    # ------------------------------------------------------------------ concepts
    async def detect(
        self,
        read: Callable[[], Awaitable[bytes]] | None,
        image_id: str | None,
        concepts: list[Concept],
        confidences: list[float],
        object_indices: list[int] | None = None,
    ) -> DetectResult:
        """Every object above its prompt's confidence for each concept, highest score first.

        The image is encoded once for all concepts; each concept runs the detector once, exactly as a request
        with that concept alone would. With ``object_indices`` only those objects (indices into the answer
        without them) get masks; the kept detections of a recent identical request are reused.
        """
        if len(confidences) != len(concepts):
            raise ValueError(f"{len(confidences)} confidences for {len(concepts)} concepts")
        return await self.run_on_image(
            read, image_id, lambda state: self._detect_sync(state, concepts, confidences, object_indices)
        )

    def _detect_sync(
        self, state: ImageState, concepts: list[Concept], confidences: list[float], object_indices: list[int] | None
    ) -> DetectResult:
        from sam3.inference.processor import mask_probabilities

        width, height = state.original_width, state.original_height
        key = (state.image_id, tuple(concepts), tuple(confidences))
        kept = self._kept.get(key)
        if kept is None:
            kept = self._run_concepts(state, concepts, confidences)
            self._kept.put(key, kept)
        indices = list(range(len(kept.scores))) if object_indices is None else object_indices
        for n, index in enumerate(indices):
            if not 0 <= index < len(kept.scores):
                raise BadValue(
                    f"object_indices[{n}]: {index} is out of range; the detection has {len(kept.scores)} objects "
                    "for this image, these prompts and this confidence"
                )
        masks = (mask_probabilities(kept.low_res[indices], (height, width)) > 0.5)[:, 0]
        masks_np = masks.cpu().numpy()
        detections = [
            Detection(masks_np[n], [float(v) for v in kept.boxes[i]], float(kept.scores[i]), int(kept.prompt_index[i]))
            for n, i in enumerate(indices)
        ]
        return DetectResult(state.image_id, width, height, detections, kept.counts)

    def _run_concepts(self, state: ImageState, concepts: list[Concept], confidences: list[float]) -> _KeptObjects:
        """The detector once per concept on the same image features; kept objects merged and sorted."""
        import torch

        processor = self._processor()
        width, height = state.original_width, state.original_height
        low_res, boxes, scores, prompt_index, counts = [], [], [], [], []
        for index, (concept, confidence) in enumerate(zip(concepts, confidences)):
            # Threshold first: the processor filters with it right after the detector runs.
            processor.set_confidence_threshold(confidence)
            processor.set_prompts(
                state,
                text=concept.text,
                boxes=[b.to_list() for b in concept.boxes],
                box_labels=list(concept.box_labels),
            )
            n = int(state.scores.numel())
            counts.append(n)
            low_res.append(state.low_res_masks)
            boxes.append(state.boxes.float().cpu().numpy().reshape(-1, 4).astype(np.float64))
            scores.append(state.scores.float().cpu().numpy().reshape(-1).astype(np.float64))
            prompt_index.append(np.full(n, index, dtype=np.int64))
        all_scores = np.concatenate(scores)
        order = np.argsort(-all_scores, kind="stable")
        all_boxes = np.concatenate(boxes)[order]
        all_boxes[:, 0::2] = all_boxes[:, 0::2].clip(0, width)
        all_boxes[:, 1::2] = all_boxes[:, 1::2].clip(0, height)
        return _KeptObjects(
            low_res=torch.cat(low_res)[torch.as_tensor(order, device=low_res[0].device)],
            boxes=all_boxes,
            scores=all_scores[order],
            prompt_index=np.concatenate(prompt_index)[order],
            counts=counts,
        )
