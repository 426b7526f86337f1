"""POST /segment/everything on the real tiny model (random weights): the answer's shape, its masks in both
formats, the image cache, crops, and a 4xx naming the field for every bad knob.

Which masks come out is checked against SAM 2's generator in tests/parity/test_everything_parity.py; here the
dev model's masks are random blobs, so the knobs are opened up (no IoU or stability filter) to get some.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tests.server.media import decode_mask, encode

OPEN = {"points_per_side": "4", "pred_iou_thresh": "0", "stability_score_thresh": "0", "box_nms_thresh": "1"}


@pytest.fixture(scope="module")
def coffee_png(coffee) -> bytes:
    return encode(coffee, "PNG")  # 400 x 600


def post(client, data: dict, image: bytes | None = None):
    files = {"image": ("coffee.png", image, "image/png")} if image is not None else None
    return client.post("/segment/everything", data=data, files=files)


def test_objects_sorted_by_area_with_png_masks(client, coffee_png):
    response = post(client, OPEN, coffee_png)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (600, 400)
    assert len(body["image_id"]) == 32
    objects = body["objects"]
    assert body["count"] == len(objects) >= 2
    areas = [o["area"] for o in objects]
    assert areas == sorted(areas, reverse=True)
    for o in objects:
        mask = decode_mask(base64.b64decode(o["mask"])) > 0
        assert mask.shape == (400, 600) and int(mask.sum()) == o["area"] > 0
        ys, xs = np.nonzero(mask)
        assert o["bbox"] == [xs.min(), ys.min(), xs.max(), ys.max()]
        assert 0 <= o["predicted_iou"] and 0 <= o["stability_score"] <= 1
        (x, y), crop = o["point_coords"][0], o["crop_box"]
        assert crop == [0, 0, 600, 400] and 0 < x < 600 and 0 < y < 400


def test_rle_by_image_id_is_the_same_answer_without_encoding(client, coffee_png):
    first = post(client, {**OPEN, "mask_format": "rle"}, coffee_png).json()
    runs = client.get("/health").json()["backbone_runs"]
    again = post(client, {**OPEN, "mask_format": "rle", "image_id": first["image_id"]}).json()
    assert client.get("/health").json()["backbone_runs"] == runs
    assert again == first
    png = post(client, {**OPEN, "image_id": first["image_id"]}).json()
    for o_rle, o_png in zip(first["objects"], png["objects"]):
        rle = {"size": o_rle["mask"]["size"], "counts": o_rle["mask"]["counts"].encode()}
        png_mask = decode_mask(base64.b64decode(o_png["mask"])) > 0
        assert np.array_equal(mask_utils.decode(rle).astype(bool), png_mask)


def test_crops_need_the_image(client, coffee_png):
    first = post(client, {**OPEN, "crop_n_layers": "1"}, coffee_png)
    assert first.status_code == 200, first.text
    crops = {tuple(o["crop_box"]) for o in first.json()["objects"]}
    assert (0, 0, 600, 400) in crops
    by_id = post(client, {**OPEN, "crop_n_layers": "1", "image_id": first.json()["image_id"]})
    assert by_id.status_code == 422
    assert by_id.json()["detail"].startswith("crop_n_layers:")


@pytest.mark.parametrize(
    "field,value,status",
    [
        ("points_per_side", "ten", 400),
        ("points_per_side", "2.5", 400),
        ("points_per_side", "0", 422),
        ("points_per_side", "100000", 422),
        ("points_per_batch", "0", 422),
        ("pred_iou_thresh", "nan", 400),
        ("pred_iou_thresh", "1.5", 422),
        ("stability_score_thresh", "-0.1", 422),
        ("stability_score_offset", "0", 422),
        ("box_nms_thresh", "x", 400),
        ("crop_n_layers", "9", 422),
        ("crop_overlap_ratio", "1", 422),
        ("crop_n_points_downscale_factor", "0", 422),
        ("min_mask_region_area", "-1", 422),
        ("multimask_output", "maybe", 400),
        ("use_m2m", "2", 400),
        ("mask_format", "jpeg", 422),
    ],
)
def test_bad_knobs_name_the_field(client, coffee_png, field, value, status):
    response = post(client, {field: value}, coffee_png)
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(f"{field}:")


def test_image_or_image_id_required(client):
    response = post(client, {})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("image:")
