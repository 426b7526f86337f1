"""Start-up steps between building the model and serving it (precision, compile, warm-up), and the
context every model call runs in (threads, autocast).

Called once from ``ModelService.load`` (in its loading thread); the decisions themselves live in
``sam3.device`` (which precision) and ``sam3.inference.runtime`` (how to apply it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from server.settings import Settings

if TYPE_CHECKING:
    from sam3.device import Precision

log = logging.getLogger("sam3.server")


def prepare_for_serving(model, precision: Precision, settings: Settings) -> None:
    """glibc's thresholds for frame loops (``server.heap.keep_freed_buffers``), int8 quantisation /
    ``SAM3_COMPILE``, then the ``SAM3_WARMUP`` pass (with ``SAM3_NUM_THREADS``): the image paths, and with a
    compiled frame step the video object buckets up to ``SAM3_WARMUP_OBJECTS``."""
    from sam3.inference.runtime import prepare_model, warm_up, warm_up_video
    from server.heap import keep_freed_buffers

    log.info("host allocator: freed frame buffers kept for the next frame: %s", keep_freed_buffers())
    report = prepare_model(model, precision, compile=settings.compile)
    log.info(
        "precision %s (%s); %d int8 linears; %d modules hold their weights in the autocast dtype; compiled: %s",
        precision.mode,
        precision.reason,
        len(report.quantized),
        len(report.held),
        ", ".join(report.compiled) or "nothing",
    )
    if settings.warmup:
        log.info(
            "warm-up: one untimed pass of encode, text prompt and click took %.1f s",
            warm_up(model, precision, settings.num_threads),
        )
        if settings.compile and settings.warmup_objects > 0:
            log.info(
                "warm-up: video object buckets up to %d objects took %.1f s",
                settings.warmup_objects,
                warm_up_video(model, precision, settings.num_threads, settings.warmup_objects),
            )


def call_context(precision: Precision | None, settings: Settings):
    """The context ``ModelService`` enters around every model call (nothing before the model loaded)."""
    import contextlib

    if precision is None:
        return contextlib.nullcontext()
    from sam3.inference.runtime import inference_context

    return inference_context(precision, settings.num_threads)
