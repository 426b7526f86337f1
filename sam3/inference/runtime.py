"""Getting a built model ready to serve: precision (int8 quantisation), compilation, warm-up.

The precision *policy* lives in :mod:`sam3.device` (``resolve_precision``); this module applies a
resolved :class:`~sam3.device.Precision` to a model once, after building it, and runs the warm-up.
Autocast itself is not applied here: callers enter ``precision.context()`` around each inference call.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from sam3.device import Precision
from sam3.inference.held_weights import HeldWeights
from sam3.quantize import quantize_linear_int8

log = logging.getLogger("sam3.runtime")

# The vision trunk (the ViT), which int8 quantises and compile compiles.
TRUNK = "detector.backbone.vision_backbone.trunk"
# The per-frame tracking step, inside each tracker (SAM 3's, SAM 3.1's multiplexed one; parts it lacks are skipped):
# module name -> torch.compile's ``dynamic``. The memory encoder sees one shape per object bucket (static
# graphs); the memory attention's memory grows with the bank and the prompt encoder / mask decoder see clicks
# of any count, so those get a dynamic graph on their second shape (torch's automatic dynamic shapes).
FRAME_STEP: dict[str, bool | None] = {
    "transformer.encoder": None,
    "sam_prompt_encoder": None,
    "sam_mask_decoder": None,
    "maskmem_backbone": False,
}
# Graphs kept per compiled function: 1, 2, 4, 8, 16 objects, each with and without a memory (torch's default, 8,
# would fall back to eager beyond it).
RECOMPILE_LIMIT = 64


@dataclass(frozen=True)
class RuntimeReport:
    """What :func:`prepare_model` did: the quantised linears, the compiled modules and the modules whose weights
    are held in the autocast dtype (qualified names)."""

    quantized: tuple[str, ...] = ()
    compiled: tuple[str, ...] = ()
    held: tuple[str, ...] = ()


def set_num_threads(num_threads: int | None) -> None:
    """Torch's intra-op CPU threads (``SAM3_NUM_THREADS``) for the calling thread; None or 0: unchanged.

    OpenMP keeps the count per calling thread once that thread has run a parallel region, so a
    server sets it in the thread of every model call (:func:`inference_context`), not once at start-up.
    """
    if num_threads and torch.get_num_threads() != int(num_threads):
        torch.set_num_threads(int(num_threads))


@contextlib.contextmanager
def inference_context(precision: Precision, num_threads: int | None = None) -> Iterator[None]:
    """Around one model call: the thread count, then the precision's autocast / TF32 context."""
    set_num_threads(num_threads)
    with precision.context():
        yield


def prepare_model(model, precision: Precision, compile: bool = False, hold_weights: bool = True) -> RuntimeReport:
    """Apply ``precision`` and ``compile`` to a built, eval-mode ``Sam3Model`` on its device, in place.

    * int8: the ``nn.Linear`` layers of the vision trunk (the ViT) become dynamically quantised int8
      linears; everything else stays fp32;
    * bf16 / fp16 autocast (``hold_weights``): the linear, convolution and attention-projection weights get a
      copy in that dtype, made once here, which their forward uses under that autocast instead of casting on
      every call (:class:`~sam3.inference.held_weights.HeldWeights`: bit for bit the same results); the
      compiled trunk keeps its own casts;
    * compile: the vision trunk (the ViT: most of an image's cost) is compiled with ``torch.compile``
      for the fixed input size, and so is the per-frame tracking step (:data:`FRAME_STEP`: memory attention,
      prompt encoder, mask decoder, memory encoder of every tracker). The first call of each shape compiles
      (seconds to minutes): run :func:`warm_up` (images) and :func:`warm_up_video` (the object buckets) before
      serving. Compiled modules hold no weight copies: inductor's freezing makes their parameters constants of
      the graphs, so the autocast weight casts are folded once at compile time.
    """
    quantized: list[str] = []
    trunk = model.get_submodule(TRUNK)
    if precision.quantize_int8:
        # The vision trunk only: it is most of an image's cost (its MLPs are the 1024 x 4096 linears). At the
        # tiny preset the outputs stay within the official bf16 yardstick; quantising the detector transformer
        # and the click decoder too went beyond it (tests/parity/precision_quality.py). At full size even the
        # trunk alone goes beyond it, as any int8 scheme would (bench/int8_floor.py): int8 is opt-in.
        quantized = [f"{TRUNK}.{n}" for n in quantize_linear_int8(trunk, min_weights=0)]
        log.info("int8: %d linear layers of the vision trunk quantised", len(quantized))
    compiled: list[str] = []
    if compile:
        # dynamic=False: the trunk always sees (B, 3, S, S) at the model's one input size.
        trunk.compile(dynamic=False)
        compiled.append(TRUNK)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        # inductor's inference freezing: parameters become constants of the compiled graphs, so the autocast casts
        # of the weights are folded once at compile time instead of running on every call (the compiled modules'
        # counterpart of the held weights); the weights are not changed after this
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        for name, dynamic in frame_step_modules(model).items():
            model.get_submodule(name).compile(dynamic=dynamic)
            compiled.append(name)
    held: list[str] = []
    if hold_weights and precision.autocast_dtype is not None:
        held = HeldWeights(model, precision.autocast_dtype, skip=tuple(compiled)).names
        log.info("%d modules hold their weights in %s", len(held), precision.mode)
    return RuntimeReport(tuple(quantized), tuple(compiled), tuple(held))


def frame_step_modules(model) -> dict[str, bool | None]:
    """Qualified names of the per-frame tracking step's modules in ``model`` -> their ``dynamic`` setting."""
    from sam3.modeling.multiplex.tracker import MultiplexTracker
    from sam3.modeling.tracker.tracker import Sam3Tracker

    found: dict[str, bool | None] = {}
    for name, module in model.named_modules():
        if isinstance(module, (Sam3Tracker, MultiplexTracker)):
            prefix = f"{name}." if name else ""
            for part, dynamic in FRAME_STEP.items():
                try:
                    module.get_submodule(part)
                except AttributeError:
                    continue
                found[prefix + part] = dynamic
    return found


def warm_up(model, precision: Precision, num_threads: int | None = None, text: str = "an object") -> float:
    """One untimed pass of each image path the service serves: encode, text prompt, click.

    Runs on a throwaway processor (no feature cache, no counters of the serving processor touched)
    under :func:`inference_context`, so kernels are selected, autocast caches built and a compiled trunk
    is compiled before the first user request. Returns the seconds it took.
    """
    import time

    from sam3.inference.processor import Sam3Processor

    started = time.perf_counter()
    size = model.config.image_size
    # A smooth gradient (not noise): the same work as a photo, and deterministic.
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    image = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size))], -1)
    processor = Sam3Processor(model, feature_cache_bytes=0, text_cache_entries=0)
    with inference_context(precision, num_threads):
        state = processor.set_image(image.astype(np.uint8))
        processor.set_text_prompt(text, state)
        if model.tracker is not None:
            processor.predict_inst(state, point_coords=[[size / 2, size / 2]], point_labels=[1])
    return time.perf_counter() - started


def object_buckets(max_objects: int) -> list[int]:
    """The padded object counts a frame of up to ``max_objects`` tracked objects can have: 1, 2, 4, ..."""
    from sam3.inference.batched_tracking import bucket_size

    return [1 << k for k in range(bucket_size(max_objects).bit_length())] if max_objects > 0 else []


def warm_up_video(
    model, precision: Precision, num_threads: int | None = None, max_objects: int = 16, frames: int = 4
) -> float:
    """Untimed video propagations, one per object bucket up to ``max_objects``, so that a compiled frame step
    (:data:`FRAME_STEP`) has its graphs before the first real frame: per bucket, that many objects clicked on
    the first frame of a generated ``frames``-frame video (one positive click each: the click graphs), then
    propagated through the rest (the batched step, with a memory that grows from frame to frame). Runs on a
    throwaway :class:`~sam3.inference.video_predictor.VideoPredictor` that pads objects to buckets. Returns the
    seconds it took (0 without a tracker or buckets)."""
    import tempfile
    import time
    from pathlib import Path

    from PIL import Image

    from sam3.inference.video_predictor import VideoPredictor

    buckets = object_buckets(max_objects)
    if getattr(model, "tracker", None) is None or not buckets or frames < 2:
        return 0.0
    started = time.perf_counter()
    h, w = 96, 128  # small frames: the model sees its own input size whatever the video's
    ramp = np.linspace(0, 255, w, dtype=np.float32)
    predictor = VideoPredictor(model, bucket_objects=True)
    with tempfile.TemporaryDirectory(prefix="sam3_warmup_") as folder:
        for t in range(frames):
            pixels = np.stack(
                [np.tile(np.roll(ramp, 4 * t), (h, 1)), np.tile(ramp[::-1], (h, 1)), np.full((h, w), 96.0)], -1
            )
            Image.fromarray(pixels.astype(np.uint8)).save(Path(folder) / f"{t:05d}.jpg")
        with inference_context(precision, num_threads):
            for n in buckets:
                session = predictor.start_session(folder)
                try:
                    for k in range(n):  # clicks spread over the frame, one object each
                        x, y = (k % 4 + 0.5) * w / 4, (k // 4 % 4 + 0.5) * h / 4
                        predictor.add_prompt(session, 0, points=[[x, y]], labels=[1], obj_id=k + 1)
                    for _ in predictor.propagate(session, direction="forward"):
                        pass
                finally:
                    predictor.close_session(session)
    return time.perf_counter() - started
