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
      for the fixed input size. The first call after this compiles (seconds to minutes): run
      :func:`warm_up` before serving.
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
    held: list[str] = []
    if hold_weights and precision.autocast_dtype is not None:
        held = HeldWeights(model, precision.autocast_dtype, skip=tuple(compiled)).names
        log.info("%d modules hold their weights in %s", len(held), precision.mode)
    return RuntimeReport(tuple(quantized), tuple(compiled), tuple(held))


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
