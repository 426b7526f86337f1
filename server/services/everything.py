"""Segment everything on the served model: :class:`~sam3.inference.automatic_masks.AutomaticMaskGenerator` over
the processor's cached image features, inside the model service's queue like the other image routes.

The whole image's features are the request's (cached under its ``image_id``, so a later click or a second
"everything" on the same image skips the backbone); each crop of ``crop_n_layers`` is encoded as an image of its
own (and cached as such). Crops need the pixels, which the cache does not keep: with ``image_id`` alone
``crop_n_layers`` must be 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from server.errors import Unprocessable

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from sam3.inference.automatic_masks import AutoMask, EverythingConfig
    from sam3.inference.processor import ImageState, Sam3Processor
    from server.services.model_service import ModelService


@dataclass(frozen=True)
class EverythingResult:
    """The masks of one image, largest first."""

    image_id: str
    width: int
    height: int
    masks: list[AutoMask]


async def segment_everything(models: ModelService, read, image_id: str | None, config: EverythingConfig):
    """Every mask of the uploaded image (``read``) or of the cached ``image_id``; 422 for crops without pixels."""
    if image_id is not None and read is None and config.crop_n_layers > 0:
        raise Unprocessable(
            "crop_n_layers: crops need the image itself (the image cache keeps features, not pixels); "
            "send image, or crop_n_layers=0 with image_id"
        )
    return await models.run_on_pixels(read, image_id, lambda state, image: _run(models.processor, state, image, config))


def _run(processor: Sam3Processor, state: ImageState, image: PILImage | None, config: EverythingConfig):
    from sam3.inference.automatic_masks import AutomaticMaskGenerator
    from sam3.inference.interactive import InteractivePredictor

    width, height = state.original_width, state.original_height
    pixels = np.asarray(image) if image is not None else None

    def features_of(box: tuple[int, int, int, int]):
        if box == (0, 0, width, height):
            return processor.sam_features(state)
        x0, y0, x1, y1 = box
        return processor.sam_features(processor.set_image(np.ascontiguousarray(pixels[y0:y1, x0:x1])))

    predictor = InteractivePredictor(processor.model.tracker)
    masks = AutomaticMaskGenerator(predictor, config).generate((height, width), features_of)
    return EverythingResult(state.image_id, width, height, masks)
