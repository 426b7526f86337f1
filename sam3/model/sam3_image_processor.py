"""``from sam3.model.sam3_image_processor import Sam3Processor``: the official import path of our processor."""

from sam3.inference.processor import ImageBatchState, ImageState, Sam3Processor

__all__ = ["ImageBatchState", "ImageState", "Sam3Processor"]
