"""Segment everything against its yardstick: SAM 2's ``SAM2AutomaticMaskGenerator`` (``sam2==1.1.0``) driven by
our interactive predictor (``tests/parity/sam2_adapter.py``), on the same real photo and random weights, fp32.

Both generators must give the same set of masks: the same count, each of ours matched one to one with one of
theirs at mask IoU > 0.99, predicted IoU and stability score within 1e-5, the same point, box and crop box.

Random weights make poor masks: a freshly initialised decoder's logits are ~0.1 (every stability score 0) and
its predicted IoUs ~0.5 (under SAM 2's 0.8), so nothing would pass SAM 2's filters and the comparison would
be empty. The model is the development mode's (``sam3/dev_weights.py``) with the interactive head's scores
spread as well (``tests/parity/sam2_adapter.py::spread_click_scores``): stability scores around 0.95 and
about 15% of the predicted IoUs above 0.8, so SAM 2's filters keep some masks and drop others. The masks stay
random blobs over the whole image whatever the click, so box NMS keeps one of them per crop at SAM 2's
defaults (those settings check which one survives); the settings that must find many masks (``MIN_COUNT``)
raise the NMS thresholds to 1 (NMS then drops no box), so that the filters, boxes, points, crop-edge filter
and RLEs are compared on dozens of masks.
"""

from __future__ import annotations

import numpy as np
import pytest

from sam3.inference.automatic_masks import AutoMask, AutomaticMaskGenerator, EverythingConfig
from sam3.inference.interactive import InteractivePredictor
from tests.parity.sam2_adapter import INSTALL_HINT, build_processor, sam2_available, sam2_generator

pytestmark = pytest.mark.skipif(not sam2_available(), reason=INSTALL_HINT)

SEED = 0
MIN_COUNT = 20
NO_NMS = {"box_nms_thresh": 1.0, "crop_nms_thresh": 1.0, "points_per_side": 16}
CROPS = {"crop_n_layers": 1, "crop_n_points_downscale_factor": 2}  # 32^2 points on the image, 16^2 on each crop

SETTINGS = {  # name: (knobs, the fewest masks this setting must find)
    "defaults": ({}, 1),
    "crop_n_layers=1": (CROPS, 1),
    "no NMS, min region": ({**NO_NMS, "min_mask_region_area": 100}, MIN_COUNT),
    "no NMS, crop_n_layers=1": ({**NO_NMS, **CROPS}, MIN_COUNT),
    # the refined random masks cover the image and score 0.6..0.75: a lower IoU threshold keeps some
    "no NMS, m2m, one mask a point": (
        {**NO_NMS, "use_m2m": True, "multimask_output": False, "pred_iou_thresh": 0.65, "points_per_batch": 50},
        MIN_COUNT // 4,
    ),
}


def ours(processor, image: np.ndarray, knobs: dict) -> list[AutoMask]:
    def features_of(box):
        x0, y0, x1, y1 = box
        return processor.sam_features(processor.set_image(np.ascontiguousarray(image[y0:y1, x0:x1])))

    predictor = InteractivePredictor(processor.model.tracker)
    return AutomaticMaskGenerator(predictor, EverythingConfig(**knobs)).generate(image.shape[:2], features_of)


def assert_same_masks(mine: list[AutoMask], theirs: list[dict]) -> None:
    from pycocotools import mask as mask_utils

    assert len(mine) == len(theirs), f"{len(mine)} masks vs SAM 2's {len(theirs)}"
    if not mine:
        return
    rle = lambda r: {"size": r["size"], "counts": r["counts"].encode()}  # noqa: E731
    iou = mask_utils.iou([rle(m.rle) for m in mine], [rle(t["segmentation"]) for t in theirs], [0] * len(theirs))
    # One to one: each of ours takes the free SAM 2 mask that overlaps it most, the closest predicted IoU breaking
    # ties (without NMS some masks are identical, e.g. several that cover the whole image after hole filling).
    gap = np.abs(np.array([m.predicted_iou for m in mine])[:, None] - [t["predicted_iou"] for t in theirs])
    score = iou - gap
    match = []
    for i in range(len(mine)):
        j = int(np.argmax(score[i]))
        match.append(j)
        score[:, j] = -np.inf
    for i, (m, j) in enumerate(zip(mine, match)):
        t = theirs[j]
        assert iou[i, j] > 0.99, f"mask {i}: best IoU {iou[i, j]:.4f} with SAM 2's"
        assert abs(m.predicted_iou - t["predicted_iou"]) <= 1e-5, (i, m.predicted_iou, t["predicted_iou"])
        assert abs(m.stability_score - t["stability_score"]) <= 1e-5, (i, m.stability_score, t["stability_score"])
        assert m.area == t["area"]
        x0, y0, x1, y1 = m.bbox
        assert [x0, y0, x1 - x0, y1 - y0] == t["bbox"]
        assert list(m.point) == t["point_coords"][0]
        cx0, cy0, cx1, cy1 = m.crop_box
        assert [cx0, cy0, cx1 - cx0, cy1 - cy0] == t["crop_box"]
    areas = [m.area for m in mine]
    assert areas == sorted(areas, reverse=True)


@pytest.fixture(scope="module")
def processor():
    return build_processor("tiny", SEED)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_same_masks_as_sam2(processor, astronaut, name):
    knobs, min_count = SETTINGS[name]
    mine = ours(processor, astronaut, knobs)
    theirs = sam2_generator(processor, **knobs).generate(astronaut)
    assert len(mine) >= min_count, f"{name}: {len(mine)} masks, too few for a comparison"
    assert_same_masks(mine, theirs)


# The released sizes' random click head predicts IoUs bunched just under SAM 2's 0.8: with crops and no NMS, 19 of
# 768 masks pass it under torch 2.14.1 and 92 under torch 2.11 (whose trunc_normal_ draws other trunk weights from
# the same seed), of which 17 and 1 also pass the stability filter; at 0.65, 250-odd pass both filters under either.
# So the many-mask comparison lowers the IoU threshold (the tiny m2m setting does the same).
FULL_SETTINGS = {  # name: (knobs, the fewest masks this setting must find)
    "defaults": ({}, 1),
    "no NMS, crop_n_layers=1, IoU above 0.65": ({**NO_NMS, **CROPS, "pred_iou_thresh": 0.65}, 100),
}


@pytest.fixture(scope="module")
def full_processor():
    return build_processor("sam3", SEED)


@pytest.mark.full
@pytest.mark.parametrize("name", list(FULL_SETTINGS))
def test_same_masks_as_sam2_full_size(full_processor, astronaut, name):
    processor = full_processor
    knobs, min_count = FULL_SETTINGS[name]
    mine = ours(processor, astronaut, knobs)
    theirs = sam2_generator(processor, **knobs).generate(astronaut)
    assert len(mine) >= min_count, f"{name}: {len(mine)} masks, too few for a comparison"
    assert_same_masks(mine, theirs)
