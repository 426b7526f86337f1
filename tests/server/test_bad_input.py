"""Bad input for every field of the image endpoints: the contract's status and a message naming the field.

After all of it the service must still be healthy (no 500s, no wedged lock).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.server.media import encode, png_declaring, truncated_png
from tests.assertions import assert_error


@pytest.fixture(scope="module")
def photo_png(astronaut) -> bytes:
    return encode(astronaut[:256, :256], "PNG")


def post_mask(client, image: bytes | None, **fields):
    files = {"image": ("photo.png", image, "image/png")} if image is not None else None
    return client.post("/predict/mask", files=files, data={k: v for k, v in fields.items() if v is not None})


def post_text(client, path: str, image: bytes | None, **fields):
    files = {"image": ("photo.png", image, "image/png")} if image is not None else None
    return client.post(path, files=files, data=fields)


# ---------------------------------------------------------------- the image itself


def test_not_an_image_is_415(client):
    assert_error(post_mask(client, b"%PDF-1.4 definitely not pixels" * 10, points="[[5, 5]]"), 415, "image")


def test_truncated_png_is_400(client, astronaut):
    detail = assert_error(post_mask(client, truncated_png(astronaut[:128, :128]), points="[[5, 5]]"), 400, "image")
    assert "truncated" in detail or "corrupt" in detail


def test_zero_sized_png_is_400(client):
    detail = assert_error(post_mask(client, png_declaring(0, 0), points="[[0, 0]]"), 400, "image")
    assert "0x0" in detail


def test_decompression_bomb_is_413(client):
    # 100k x 100k declared in a few hundred bytes: refused from the header, nothing decoded.
    assert_error(post_mask(client, png_declaring(100_000, 100_000), points="[[5, 5]]"), 413, "image")


def test_image_over_pixel_limit_is_413(client):
    # 3000 x 3000 = 9 MP: under PIL's own guard, over this app's SAM_MAX_IMAGE_PIXELS (4 MP).
    detail = assert_error(post_mask(client, png_declaring(3000, 3000), points="[[5, 5]]"), 413, "image")
    assert "SAM_MAX_IMAGE_PIXELS" in detail


@pytest.mark.parametrize("side", [950, 1100])  # ~2.7 MB: caught by the route; ~3.6 MB: by Content-Length
def test_upload_over_byte_limit_is_413(client, side):
    big = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)  # noise: PNG ~ raw size
    detail = assert_error(post_mask(client, encode(big, "PNG"), points="[[5, 5]]"), 413, "image")
    assert "SAM_MAX_UPLOAD_MB" in detail


def test_empty_upload_is_400(client):
    assert_error(post_mask(client, b"", points="[[5, 5]]"), 400, "image")


@pytest.mark.parametrize("path", ["/predict/mask", "/detect", "/segment/text"])
def test_missing_image_is_422(client, path):
    response = client.post(path, data={"points": "[[5, 5]]", "text": "cat"})
    assert_error(response, 422, "image")


# ---------------------------------------------------------------- /predict/mask fields


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"points": "[[5, 5]"}, "points"),  # not JSON
        ({"points": '{"x": 5}'}, "points"),  # not a list
        ({"points": "[5, 5]"}, "points[0]"),  # not pairs
        ({"points": "[[5, 5, 5]]"}, "points[0]"),
        ({"points": '[["a", 5]]'}, "points[0][0]"),
        ({"points": "[[5, NaN]]"}, "points[0][1]"),
        ({"points": "[[5000, 5]]"}, "points[0]"),  # outside the 256x256 image
        ({"points": "[]"}, "points"),
        ({"points": json.dumps([[1, 1]] * 17)}, "points"),  # over SAM_MAX_POINTS=16
        ({"points": "[[5, 5]]", "labels": "[1, 0]"}, "labels"),  # length mismatch
        ({"points": "[[5, 5]]", "labels": "[2]"}, "labels[0]"),  # not 0/1
        ({"points": "[[5, 5]]", "labels": "[true]"}, "labels[0]"),
        ({"points": "[[5, 5]]", "labels": "one"}, "labels"),
        ({"labels": "[1]"}, "labels"),  # labels without points
        ({}, "points"),  # neither points nor boxes
        ({"boxes": "[0.5, 0.5, 1.5, 0.2]"}, "boxes"),  # outside 0..1
        ({"boxes": "[0.5, 0.5, 0, 0.2]"}, "boxes"),  # zero width
        ({"boxes": "[0.9, 0.5, 0.4, 0.2]"}, "boxes"),  # sticks out of the image
        ({"boxes": "[0.5, 0.5, 0.2]"}, "boxes"),  # three numbers
        ({"boxes": "[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]]"}, "boxes"),  # more than one box
        ({"boxes": "nope"}, "boxes"),
    ],
)
def test_malformed_prompt_is_400(client, photo_png, fields, field):
    assert_error(post_mask(client, photo_png, **fields), 400, field)


def test_oversized_form_field_is_413(client, photo_png):
    huge_points = "[" + "[1, 1], " * 200_000 + "[1, 1]]"  # ~1.6 MB of text in one form field
    assert_error(post_mask(client, photo_png, points=huge_points), 413, "form")


def test_broken_multipart_is_400(client):
    response = client.post(
        "/predict/mask", content=b"garbage", headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert_error(response, 400, "form")


def test_multimask_not_a_bool_is_422(client, photo_png):
    assert_error(post_mask(client, photo_png, points="[[5, 5]]", multimask="maybe"), 422, "multimask")


# ---------------------------------------------------------------- /detect and /segment/text fields


@pytest.mark.parametrize("path", ["/detect", "/segment/text"])
@pytest.mark.parametrize(
    "fields, field",
    [
        ({"text": "cat", "confidence": "1.5"}, "confidence"),
        ({"text": "cat", "confidence": "-0.1"}, "confidence"),
        ({"text": "cat", "confidence": "high"}, "confidence"),
        ({"text": ""}, "text"),
        ({"text": "   "}, "text"),
        ({"text": "x" * 10_000}, "text"),  # 10 kB, over SAM_MAX_TEXT_LENGTH
        ({"confidence": "0.5"}, "text"),  # missing
    ],
)
def test_bad_text_fields_are_422(client, photo_png, path, fields, field):
    assert_error(post_text(client, path, photo_png, **fields), 422, field)


def test_service_is_healthy_after_bad_input(client, photo_png):
    post_mask(client, b"junk", points="[[5, 5]]")
    post_mask(client, png_declaring(100_000, 100_000), points="[[5, 5]]")
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["model_loaded"] is True
    ok = post_mask(client, photo_png, points="[[20, 30]]")
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
