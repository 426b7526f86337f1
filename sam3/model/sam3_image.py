"""``Sam3Image``: our :class:`~sam3.modeling.sam3_model.Sam3Model` with the official model-level click calls.

The official README and notebooks click on the MODEL, with the processor's state::

    model = build_sam3_image_model(enable_inst_interactivity=True)
    state = Sam3Processor(model).set_image(image)
    masks, scores, logits = model.predict_inst(state, point_coords=..., point_labels=..., multimask_output=True)

These methods delegate to :class:`sam3.inference.interactive.InteractivePredictor` on the state's cached
click features (the same call :meth:`Sam3Processor.predict_inst` makes); the model itself is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sam3.modeling.sam3_model import Sam3Model

if TYPE_CHECKING:
    from sam3.inference.interactive import InteractivePredictor
    from sam3.inference.processor import ImageBatchState, ImageState


class Sam3Image(Sam3Model):
    """The image model as the official ``build_sam3_image_model`` returns it (``predict_inst`` on the model)."""

    _predictor: InteractivePredictor | None = None

    def _interactive(self) -> InteractivePredictor:
        if self.tracker is None:
            raise RuntimeError("predict_inst needs a model built with enable_inst_interactivity=True")
        if self._predictor is None:
            from sam3.inference.interactive import InteractivePredictor

            self._predictor = InteractivePredictor(self.tracker)
        return self._predictor

    def predict_inst(self, inference_state: ImageState, **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks from clicks / a box / a previous low-res mask on an image set with ``Sam3Processor.set_image``.

        kwargs: ``point_coords``, ``point_labels``, ``box``, ``mask_input``, ``multimask_output``,
        ``return_logits``, ``normalize_coords`` (see ``InteractivePredictor.predict_inst``).
        Returns (masks (K, H, W), iou (K,), low_res_logits (K, 4g, 4g)) as numpy arrays.
        """
        from sam3.inference.processor import ImageState

        predictor = self._interactive()
        if not isinstance(inference_state, ImageState):
            raise ValueError("call Sam3Processor.set_image first and pass the state it returned")
        hw = (inference_state.original_height, inference_state.original_width)
        # The processor made this state; its image's tracker neck runs here when no click came before.
        return predictor.predict_inst(inference_state.cached.sam_features(self, predictor), hw, **kwargs)

    def predict_inst_batch(
        self,
        inference_state: ImageBatchState,
        point_coords_batch=None,
        point_labels_batch=None,
        box_batch=None,
        mask_input_batch=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """``predict_inst`` for each image of a ``Sam3Processor.set_image_batch`` state; per-image prompt lists."""
        pick = lambda seq, i: None if seq is None else seq[i]  # noqa: E731
        results = [
            self.predict_inst(
                state,
                point_coords=pick(point_coords_batch, i),
                point_labels=pick(point_labels_batch, i),
                box=pick(box_batch, i),
                mask_input=pick(mask_input_batch, i),
                multimask_output=multimask_output,
                return_logits=return_logits,
                normalize_coords=normalize_coords,
            )
            for i, state in enumerate(inference_state)
        ]
        return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results]
