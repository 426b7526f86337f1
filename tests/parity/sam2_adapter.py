"""SAM 2's automatic mask generator driven by OUR interactive predictor: the yardstick of "segment everything".

``sam2`` (the ``sam2==1.1.0`` package from the index, CUDA extension not built) is a test dependency only,
installed beside the project in ``.sam2`` by ``./run_tests.sh`` (it pulls hydra-core and omegaconf, which the
service has no use for). Its ``SAM2AutomaticMaskGenerator`` builds a ``SAM2ImagePredictor`` from the model it is
given; :func:`sam2_generator` swaps that class for :class:`OurPredictorAsSam2`, which answers the four things the
generator asks of it (``set_image``, ``_transforms.transform_coords``, ``_predict``, ``reset_predictor``) with our
``Sam3Processor`` (image encoding, cached) and ``InteractivePredictor.predict_inst`` (the click path of
``/predict/mask``). So both generators see the same model; what differs is the generator alone.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from sam3.inference.interactive import InteractivePredictor

ROOT = Path(__file__).resolve().parents[2]
SAM2_DIR = ROOT / ".sam2"
SAM2_VERSION = "1.1.0"
INSTALL_HINT = (
    "the sam2 package (the yardstick of /segment/everything) is not installed in .sam2; run ./run_tests.sh once, "
    f"or: SAM2_BUILD_CUDA=0 .venv/bin/pip install --no-deps --no-build-isolation --target .sam2 sam2=={SAM2_VERSION} "
    "hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3"
)


def sam2_available() -> bool:
    return (SAM2_DIR / "sam2" / "automatic_mask_generator.py").is_file()


def import_sam2_amg():
    """The ``sam2.automatic_mask_generator`` module from ``.sam2`` (appended to sys.path, so our packages win)."""
    if str(SAM2_DIR) not in sys.path:
        sys.path.append(str(SAM2_DIR))
    import sam2.automatic_mask_generator as amg

    return amg


@dataclass
class OurModel:
    """What the adapter is given in place of a ``SAM2Base``: our processor (encoder + feature cache)."""

    processor: object  # sam3.inference.processor.Sam3Processor


class OurPredictorAsSam2:
    """``SAM2ImagePredictor``'s face over our processor and :class:`InteractivePredictor`.

    ``max_hole_area`` / ``max_sprinkle_area`` (the generator passes ``min_mask_region_area``) go to our
    predictor's clean-up of the low-res logits, as SAM 2's predictor does with them.
    """

    def __init__(self, model: OurModel, max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0, **_):
        self.processor = model.processor
        self.predictor = InteractivePredictor(
            self.processor.model.tracker, max_hole_area=max_hole_area, max_sprinkle_area=max_sprinkle_area
        )
        self.device = self.processor.device
        # The generator maps its crop-pixel points through this; our predict_inst takes pixels itself.
        self._transforms = SimpleNamespace(transform_coords=lambda coords, normalize=False, orig_hw=None: coords)
        self._features, self._hw = None, None

    def set_image(self, image: np.ndarray) -> None:
        state = self.processor.set_image(np.ascontiguousarray(image))
        self._features, self._hw = self.processor.sam_features(state), tuple(image.shape[:2])

    def reset_predictor(self) -> None:
        self._features, self._hw = None, None

    def _predict(self, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True,
                 return_logits=False, img_idx=-1):  # fmt: skip
        """(B, 1, 2) pixels, (B, 1) labels[, (B, 1, s, s) logits] -> torch (masks (B, K, H, W), iou (B, K),
        low-res logits (B, K, s, s)), as SAM 2's ``_predict``."""
        b = point_coords.shape[0]
        masks, iou, low_res = self.predictor.predict_inst(
            self._features,
            self._hw,
            point_coords=point_coords.cpu().numpy(),
            point_labels=point_labels.cpu().numpy(),
            mask_input=None if mask_input is None else mask_input.cpu(),
            multimask_output=multimask_output,
            return_logits=return_logits,
        )
        # predict_inst drops the batch axis when B == 1: put it back
        return (
            torch.from_numpy(masks).reshape(b, -1, *self._hw),
            torch.from_numpy(iou).reshape(b, -1),
            torch.from_numpy(low_res).reshape(b, -1, *low_res.shape[-2:]),
        )


def sam2_generator(processor, **knobs):
    """SAM 2's ``SAM2AutomaticMaskGenerator`` (COCO RLE output) over our processor and predictor."""
    amg = import_sam2_amg()
    original = amg.SAM2ImagePredictor
    amg.SAM2ImagePredictor = OurPredictorAsSam2
    try:
        return amg.SAM2AutomaticMaskGenerator(OurModel(processor), output_mode="coco_rle", **knobs)
    finally:
        amg.SAM2ImagePredictor = original


# A random decoder's mask logits are ~0.1 (stability scores 0) and its predicted IoUs ~0.5 (under SAM 2's 0.8):
# 1000x steeper logits put the stability scores about SAM 2's 0.95 (half above), the IoU head's spread and shift
# put some 15% of the masks above 0.8.
MASK_GAIN = 1000.0
IOU_GAIN = 10.0
IOU_SHIFT = 1.0


@torch.no_grad()
def spread_click_scores(model) -> None:
    """Steeper mask logits and spread predicted IoUs for the random interactive head (in place), so that SAM 2's
    default filters keep some masks and drop others."""
    decoder = model.tracker.sam_mask_decoder
    for mlp in decoder.output_hypernetworks_mlps:
        mlp.layers[-1].weight.mul_(MASK_GAIN)
        mlp.layers[-1].bias.mul_(MASK_GAIN)
    head = decoder.iou_prediction_head.layers[-1]
    head.weight.mul_(IOU_GAIN)
    head.bias.add_(IOU_SHIFT)


def build_processor(preset: str, seed: int = 0):
    """A processor over the development mode's random model (fp32, CPU) with :func:`spread_click_scores`."""
    from sam3.build import build_image_model
    from sam3.dev_weights import make_visible
    from sam3.inference.processor import Sam3Processor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_image_model(
            checkpoint_path=None, device="cpu", enable_inst_interactivity=True, load_from_HF=False,
            preset=preset, random_weights=True,
        )  # fmt: skip
    make_visible(model)
    spread_click_scores(model)
    return Sam3Processor(model.eval())
