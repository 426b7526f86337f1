"""Image decoding: every pixel mode keeps its content, EXIF orientation is applied first, limits on side and
aspect ratio beside the pixel limit, and Pillow only ever tries the formats we accept.

The EXIF expectations are written from the EXIF specification with numpy (not from Pillow's own table), and
the end-to-end check posts each orientation to the real app and compares the answer with the one for the
image as displayed.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from server.errors import BadValue, TooLarge, UnsupportedMedia
from server.imaging import ImageLimits, check_image_size, decode_image
from tests.server.media import decode_mask, png_declaring

LIMITS = ImageLimits(max_bytes=8 * 2**20, max_pixels=4_000_000, max_side=4096, max_aspect=20.0)


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _decode(data: bytes) -> np.ndarray:
    image = decode_image(data, limits=LIMITS)
    assert image.mode == "RGB"
    return np.asarray(image)


# ------------------------------------------------------------------------------------------ pixel modes
def test_16bit_grayscale_png_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    data = _save(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")  # the file really is 16-bit
    out = _decode(data)
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    assert np.array_equal(out[..., 0], expected) and np.array_equal(out[..., 1], expected)
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) > 200  # not all white


def test_16bit_png_of_a_real_photo_keeps_its_content(astronaut):
    gray = np.asarray(Image.fromarray(astronaut).convert("L")).astype(np.uint16) * 257
    out = _decode(_save(Image.fromarray(gray), "PNG"))
    assert np.abs(out[..., 0].astype(int) - gray // 257).max() <= 1


def test_float_tiff_is_scaled():
    values = np.linspace(0.0, 1.0, 40 * 30, dtype=np.float32).reshape(30, 40)
    data = _save(Image.fromarray(values, "F"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    out = _decode(data)
    assert np.array_equal(out[..., 0], np.rint(values * 255).astype(np.uint8))


def test_float_tiff_outside_0_1_is_stretched_and_nan_is_zero():
    values = np.linspace(-50.0, 150.0, 40 * 30, dtype=np.float32).reshape(30, 40)
    values[0, 0] = np.nan
    out = _decode(_save(Image.fromarray(values, "F"), "TIFF"))
    assert out[..., 0].max() == 255 and out[0, 1, 0] == 0  # the minimum maps to 0, the maximum to 255
    assert out[0, 0, 0] == round((0 - (-50)) * 255 / 200)  # NaN read as 0.0


def test_32bit_integer_tiff_is_scaled():
    values = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.int32)  # 0 .. 59950: a 16-bit range
    data = _save(Image.fromarray(values, "I"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    out = _decode(data)
    assert np.array_equal(out[..., 0], np.rint(values / 257.0).astype(np.uint8))


def test_palette_with_transparency_and_alpha_are_composited_on_white(coffee):
    rgba = np.dstack([coffee[:64, :64], np.full((64, 64), 255, np.uint8)])
    rgba[:32, :, 3] = 0  # top half transparent
    out = _decode(_save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (out[:32] == 255).all()
    assert np.array_equal(out[32:], coffee[32:64, :64])

    la = Image.fromarray(np.dstack([coffee[:64, :64, 0], rgba[..., 3]]), "LA")
    out = _decode(_save(la, "PNG"))
    assert (out[:32] == 255).all() and np.array_equal(out[32:, :, 0], coffee[32:64, :64, 0])

    palette = Image.fromarray(coffee[:64, :64]).convert("P")
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])
    out = _decode(_save(palette, "PNG", transparency=int(np.asarray(palette)[0, 0])))
    assert (out[0, 0] == 255).all()
    opaque = np.asarray(palette) != np.asarray(palette)[0, 0]
    assert np.array_equal(out[opaque], np.asarray(palette.convert("RGB"))[opaque])


def test_cmyk_jpeg_is_converted(coffee):
    cmyk = Image.fromarray(coffee).convert("CMYK")
    data = _save(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = _decode(data)
    assert np.abs(out.astype(int) - coffee.astype(int)).mean() < 6


@pytest.mark.parametrize(
    "mode",
    [
        "1",
        "L",
        "P",
        "RGB",
        "RGBA",
        "CMYK",
        "YCbCr",
        "LAB",
        "HSV",
        "I",
        "F",
        "LA",
        "PA",
        "RGBX",
        "RGBa",
        "La",
        "I;16",
        "I;16B",
        "I;16L",
        "I;16N",
    ],
)
def test_every_pillow_mode_reaches_rgb_with_its_content(mode, astronaut):
    """A mid-grey image in each mode comes out mid-grey (or a 415 naming the mode, which none needs today)."""
    from server.imaging import to_rgb

    grey = Image.fromarray(np.full((8, 8, 3), 128, np.uint8))
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        image = Image.new(mode, (8, 8), 128 * 257)
    elif mode == "I":
        image = Image.new("I", (8, 8), 128)
    elif mode == "F":
        image = Image.new("F", (8, 8), 128 / 255)
    elif mode in ("RGBa", "La"):
        image = Image.new(mode, (8, 8), (128, 255) if mode == "La" else (128, 128, 128, 255))
    else:
        image = grey.convert(mode)
    try:
        out = np.asarray(to_rgb(image))
    except UnsupportedMedia as exc:
        assert repr(mode) in exc.detail
        return
    tolerance = 64 if mode == "1" else 3  # "1" dithers a flat grey
    assert out.shape == (8, 8, 3) and abs(out.astype(float).mean() - 128) <= tolerance, (mode, out[0, 0])


# ------------------------------------------------------------------------------------------ EXIF orientation
# How each EXIF orientation value maps the stored pixels to the displayed ones (EXIF 2.32, tag 0x0112).
DISPLAY = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # stored row 0 is displayed column 0
    6: lambda a: np.rot90(a, -1),  # rotate 90 clockwise to display (a phone held upright)
    7: lambda a: np.rot90(a.transpose(1, 0, 2), 2),  # transverse
    8: lambda a: np.rot90(a, 1),  # rotate 90 counter-clockwise to display
}
STORE = {
    1: DISPLAY[1],
    2: DISPLAY[2],
    3: DISPLAY[3],
    4: DISPLAY[4],
    5: DISPLAY[5],
    6: lambda a: np.rot90(a, 1),
    7: DISPLAY[7],
    8: lambda a: np.rot90(a, -1),
}


def _displayed(astronaut) -> np.ndarray:
    """A portrait (96 tall, 64 wide) crop of a real photo: no symmetry, so every orientation differs."""
    return np.ascontiguousarray(astronaut[40:136, 180:244])


def _stored_with_orientation(displayed: np.ndarray, orientation: int, fmt: str = "PNG", **kwargs) -> bytes:
    stored = np.ascontiguousarray(STORE[orientation](displayed))
    assert np.array_equal(DISPLAY[orientation](stored), displayed)  # the two tables agree
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    return _save(image, fmt, exif=exif, **kwargs)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation, astronaut):
    displayed = _displayed(astronaut)
    out = _decode(_stored_with_orientation(displayed, orientation))
    assert np.array_equal(out, displayed)


def test_phone_jpeg_with_orientation_6_is_portrait(astronaut):
    """The issue's case: stored landscape with Orientation=6, shown by every viewer as portrait."""
    displayed = np.ascontiguousarray(astronaut[:450, :300])
    data = _stored_with_orientation(displayed, 6, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).size == (450, 300)  # stored landscape
    out = _decode(data)
    assert out.shape == (450, 300, 3)
    assert np.abs(out.astype(int) - displayed.astype(int)).mean() < 4


@pytest.mark.parametrize("orientation", range(1, 9))
def test_click_and_mask_are_in_the_displayed_image(client, orientation, astronaut):
    """Over the real app: a click valid only in the displayed (portrait) frame is accepted, and the mask is
    the displayed size and identical to the one for the image uploaded already upright."""
    displayed = _displayed(astronaut)
    point = {"points": "[[40, 80]]"}  # y = 80 is outside the stored 96x64 of orientations 5..8
    upright = client.post(
        "/predict/mask", files={"image": ("u.png", _save(Image.fromarray(displayed), "PNG"))}, data=point
    )
    assert upright.status_code == 200, upright.text
    reference = decode_mask(upright.content)
    assert reference.shape == (96, 64)

    response = client.post(
        "/predict/mask", data=point, files={"image": ("o.png", _stored_with_orientation(displayed, orientation))}
    )
    assert response.status_code == 200, response.text
    mask = decode_mask(response.content)
    assert mask.shape == (96, 64)
    assert np.array_equal(mask, reference)
    assert response.headers["X-Mask-Score"] == upright.headers["X-Mask-Score"]


# ------------------------------------------------------------------------------------------ limits
def test_thin_images_are_refused_from_the_header():
    with pytest.raises(TooLarge, match="aspect ratio.*SAM_MAX_IMAGE_ASPECT"):
        decode_image(png_declaring(1, 3_999_999), limits=LIMITS)
    with pytest.raises(TooLarge, match="SAM_MAX_IMAGE_SIDE"):
        decode_image(png_declaring(5000, 400), limits=LIMITS)
    with pytest.raises(TooLarge, match="SAM_MAX_IMAGE_PIXELS"):
        decode_image(png_declaring(3000, 3000), limits=LIMITS)
    check_image_size(4096, 205, LIMITS)  # at the limits: fine


def test_thin_image_over_http_is_413_naming_the_field(client):
    response = client.post(
        "/predict/mask", files={"image": ("thin.png", png_declaring(1, 1_000_000))}, data={"points": "[[0, 0]]"}
    )
    assert response.status_code == 413, response.text
    assert response.json()["detail"].startswith("image:") and "aspect ratio" in response.json()["detail"]


def test_limits_come_from_the_settings(monkeypatch):
    from server.settings import Settings

    monkeypatch.setenv("SAM_MAX_IMAGE_SIDE", "2048")
    monkeypatch.setenv("SAM_MAX_IMAGE_ASPECT", "4.5")
    limits = ImageLimits.from_settings(Settings())
    assert (limits.max_side, limits.max_aspect) == (2048, 4.5)


# ------------------------------------------------------------------------------------------ formats
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke showpage\n%%EOF\n"


def test_formats_outside_the_accepted_list_never_open():
    assert Image.open(io.BytesIO(EPS)).format == "EPS"  # Pillow alone would take it (and run Ghostscript)
    with pytest.raises(UnsupportedMedia, match="not an accepted image"):
        decode_image(EPS, limits=LIMITS)
    ico = _save(Image.new("RGB", (16, 16), (200, 10, 10)), "ICO")
    assert Image.open(io.BytesIO(ico)).format == "ICO"
    with pytest.raises(UnsupportedMedia):
        decode_image(ico, limits=LIMITS)


def test_accepted_formats_still_open(coffee):
    for fmt, kwargs in [
        ("PNG", {}),
        ("JPEG", {"quality": 95}),
        ("WEBP", {"lossless": True}),
        ("BMP", {}),
        ("GIF", {}),
        ("TIFF", {}),
    ]:
        out = _decode(_save(Image.fromarray(coffee), fmt, **kwargs))
        assert out.shape == coffee.shape, fmt


def test_broken_images_are_400():
    with pytest.raises(BadValue):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, limits=LIMITS)


def test_16bit_png_over_http_gives_the_masks_of_its_picture(client, astronaut):
    """The issue's case end to end: the 16-bit upload is answered as its 8-bit twin, not as a white picture."""
    gray8 = np.asarray(Image.fromarray(astronaut[:128, :128]).convert("L"))
    point = {"points": "[[60, 60]]"}
    eight = client.post("/predict/mask", data=point, files={"image": ("8.png", _save(Image.fromarray(gray8), "PNG"))})
    sixteen = client.post(
        "/predict/mask",
        data=point,
        files={"image": ("16.png", _save(Image.fromarray(gray8.astype(np.uint16) * 257), "PNG"))},
    )
    white = client.post(
        "/predict/mask", data=point, files={"image": ("w.png", _save(Image.fromarray(np.full_like(gray8, 255)), "PNG"))}
    )
    assert eight.status_code == sixteen.status_code == white.status_code == 200
    assert np.array_equal(decode_mask(sixteen.content), decode_mask(eight.content))
    assert sixteen.headers["X-Mask-Score"] == eight.headers["X-Mask-Score"] != white.headers["X-Mask-Score"]
