"""``InpaintingManager.segment_everything`` (sync and async) against the real service (uvicorn, tiny preset)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image

from milimo_clients import AsyncInpaintingManager, EverythingResult, InpaintingManager, SamServiceError

# Random weights: no mask passes SAM 2's default filters, so they are opened up.
OPEN = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


@pytest.fixture(scope="module")
def photo(tmp_path_factory, coffee):
    path = tmp_path_factory.mktemp("everything") / "coffee.png"
    Image.fromarray(coffee[:200, :260]).save(path)
    return path


def test_sync_and_async_give_the_same_objects(live_server, photo, tmp_path):
    with InpaintingManager(live_server.url) as sam:
        found = sam.segment_everything(photo, **OPEN)
        as_rle = sam.segment_everything(image_id=found.image_id, mask_format="rle", **OPEN)
        with pytest.raises(SamServiceError) as err:
            sam.segment_everything(photo, points_per_side=0)
        assert err.value.status_code == 422 and str(err.value).startswith("points_per_side")
        with pytest.raises(SamServiceError, match="^point_per_side: not a knob"):
            sam.segment_everything(photo, point_per_side=8)

    assert isinstance(found, EverythingResult) and (found.width, found.height) == (260, 200)
    assert found.count == len(found.objects) > 0
    assert [o.area for o in found.objects] == sorted((o.area for o in found.objects), reverse=True)
    for png_obj, rle_obj in zip(found.objects, as_rle.objects):
        assert isinstance(rle_obj.mask, dict)
        assert np.array_equal(png_obj.mask_array(), rle_obj.mask_array())
        assert png_obj.mask_array().sum() == png_obj.area
        assert (png_obj.bbox, png_obj.point, png_obj.crop_box) == (rle_obj.bbox, rle_obj.point, rle_obj.crop_box)
    saved = found.objects[0].save_mask(tmp_path / "largest.png")
    assert np.array_equal(np.asarray(Image.open(saved)) > 0, found.objects[0].mask_array())

    async def run():
        async with AsyncInpaintingManager(live_server.url) as sam:
            return await sam.segment_everything(photo, **OPEN)

    again = asyncio.run(run())
    assert again.image_id == found.image_id
    assert [(o.area, o.bbox, o.predicted_iou) for o in again.objects] == [
        (o.area, o.bbox, o.predicted_iou) for o in found.objects
    ]
