"""Upload bytes in, an 8-bit RGB image *as displayed* out: decoding with limits, orientation and every pixel mode.

Order, and why:

1. Size limits from the header, before any pixel is decoded: bytes (``SAM_MAX_UPLOAD_MB``), pixels
   (``SAM_MAX_IMAGE_PIXELS``), the longest side (``SAM_MAX_IMAGE_SIDE``) and the aspect ratio
   (``SAM_MAX_IMAGE_ASPECT``). A small file that declares a huge or very thin size costs nothing: a 1 x 40
   million PNG passes a pixel limit alone and then explodes in pre-processing.
2. Only the formats we accept are tried (``Image.open(formats=ACCEPTED_FORMATS)``): EPS, PDF, PSD and the
   other plugins never run on an upload (EPS would start Ghostscript where it is installed).
3. EXIF orientation is applied first, so the image the model sees, the points and boxes of the request and
   the masks of the answer are all in the image as every viewer displays it (a phone photo stored 900x600
   with Orientation=6 is a 600x900 image here).
4. Pixel modes are mapped to 8-bit RGB keeping their content: 16-bit and 32-bit integer images are scaled
   (not clipped as ``convert("RGB")`` would), float images scaled, palette and alpha images composited on
   white (what a viewer shows on a white page), CMYK / YCbCr / LAB converted. Anything else is a 415 that
   names the mode.

PIL's own global ``Image.MAX_IMAGE_PIXELS`` is left untouched (no global state changes); its hard guard
(2x its default, ~179 MP) stays as a second fence behind ours.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from server.errors import BadValue, TooLarge, UnsupportedMedia

# What Pillow may try on an upload. Multi-picture JPEGs (MPO, written by many phones) open through "JPEG".
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
_ACCEPTED_TEXT = "PNG, JPEG, WEBP, BMP, GIF or TIFF"

# Magic numbers of the accepted formats: a file that starts like one but cannot be opened is a broken
# image (400), anything else is not an image we take (415).
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}

# Background that transparent pixels are composited onto (what a viewer shows on a white page).
_BACKGROUND = (255, 255, 255)

# Modes Pillow converts to RGB with their real content (colour-space conversions or 8-bit channels).
_DIRECT_MODES = {"RGB", "L", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
# Modes that carry alpha (or transparency through the palette): composited onto _BACKGROUND.
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA", "P"}


@dataclass(frozen=True)
class ImageLimits:
    """The decoding limits of the service (settings ``SAM_MAX_UPLOAD_MB``, ``SAM_MAX_IMAGE_*``)."""

    max_bytes: int = 25 * 2**20
    max_pixels: int = 40_000_000
    max_side: int = 16384
    max_aspect: float = 20.0

    @classmethod
    def from_settings(cls, settings) -> ImageLimits:
        return cls(
            settings.max_upload_bytes, settings.max_image_pixels, settings.max_image_side, settings.max_image_aspect
        )


def _sniff(data: bytes) -> str | None:
    for magic, name in _MAGIC.items():
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _png_declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None if the header is not there."""
    if len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    return None


def check_image_size(width: int, height: int, limits: ImageLimits, field: str = "image", what: str = "image") -> None:
    """400 for an empty size, 413 over the pixel, side or aspect-ratio limit. Usable for video frames too."""
    if width <= 0 or height <= 0:
        raise BadValue(f"{field}: the {what} is {width}x{height}; width and height must be > 0")
    if width * height > limits.max_pixels:
        raise TooLarge(
            f"{field}: the {what} is {width}x{height} = {width * height:,} pixels, over the "
            f"{limits.max_pixels:,} pixel limit (SAM_MAX_IMAGE_PIXELS)"
        )
    aspect = max(width, height) / min(width, height)
    if aspect > limits.max_aspect:
        raise TooLarge(
            f"{field}: the {what} is {width}x{height}, an aspect ratio of {aspect:.1f}:1, over the "
            f"{limits.max_aspect:g}:1 limit (SAM_MAX_IMAGE_ASPECT)"
        )
    if max(width, height) > limits.max_side:
        raise TooLarge(
            f"{field}: the {what} is {width}x{height}; its longest side is over the {limits.max_side} px limit "
            "(SAM_MAX_IMAGE_SIDE)"
        )


def decode_image(
    data: bytes,
    *,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    limits: ImageLimits | None = None,
    field: str = "image",
) -> Image.Image:
    """Decode uploaded bytes into an 8-bit RGB PIL image as displayed (EXIF orientation applied).

    ``limits`` carries every limit; ``max_bytes`` / ``max_pixels`` override its fields (older callers).
    Raises 413 (bytes, pixels, side or aspect ratio over the limit), 415 (not an accepted format, or a
    pixel mode with no RGB meaning) or 400 (empty, truncated, corrupt, or a zero-sized image).
    Multi-frame files (GIF, TIFF) give their first frame.
    """
    limits = limits or ImageLimits()
    if max_bytes is not None or max_pixels is not None:
        limits = ImageLimits(
            max_bytes if max_bytes is not None else limits.max_bytes,
            max_pixels if max_pixels is not None else limits.max_pixels,
            limits.max_side,
            limits.max_aspect,
        )
    if not data:
        raise BadValue(f"{field}: the upload is empty")
    if len(data) > limits.max_bytes:
        raise TooLarge(
            f"{field}: the upload is {len(data) / 2**20:.1f} MB, over the {limits.max_bytes / 2**20:.1f} MB limit "
            "(SAM_MAX_UPLOAD_MB)"
        )
    kind = _sniff(data)
    if kind == "PNG":
        size = _png_declared_size(data)
        if size is not None and (size[0] == 0 or size[1] == 0):
            raise BadValue(f"{field}: the PNG declares a {size[0]}x{size[1]} size; width and height must be > 0")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"{field}: {exc}") from None
    except UnidentifiedImageError:
        if kind is not None:
            raise BadValue(f"{field}: corrupt {kind} data (the header could not be parsed)") from None
        raise UnsupportedMedia(f"{field}: not an accepted image (expected {_ACCEPTED_TEXT} bytes)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadValue(f"{field}: corrupt image data ({exc})") from None

    check_image_size(*image.size, limits, field)
    try:
        image.load()
        image = ImageOps.exif_transpose(image) or image
        return to_rgb(image, field)
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"{field}: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadValue(f"{field}: truncated or corrupt {image.format or 'image'} data ({exc})") from None


def to_rgb(image: Image.Image, field: str = "image") -> Image.Image:
    """Any Pillow mode -> 8-bit RGB with the image's real content (415 naming the mode when it has none)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _DIRECT_MODES:
        return image.convert("RGB")
    if mode in _ALPHA_MODES:
        if mode == "P" and "transparency" not in image.info:
            return image.convert("RGB")
        rgba = image.convert("RGBA") if mode not in ("La", "RGBa") else _unpremultiply(image)
        flat = Image.new("RGB", rgba.size, _BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _scale_to_8bit(np.asarray(image), mode)
        return Image.fromarray(gray, "L").convert("RGB")
    raise UnsupportedMedia(
        f"{field}: pixel mode {mode!r} is not supported (expected 8- or 16-bit grayscale, palette, RGB(A), CMYK, "
        "YCbCr, LAB or a 32-bit integer / float grayscale image)"
    )


def _unpremultiply(image: Image.Image) -> Image.Image:
    """A premultiplied-alpha image ("La", "RGBa") as straight RGBA (Pillow cannot convert "La" itself)."""
    arr = np.asarray(image).astype(np.float32)
    alpha = arr[..., -1:]
    colour = np.where(alpha > 0, arr[..., :-1] * 255.0 / np.maximum(alpha, 1), 0).clip(0, 255)
    if colour.shape[-1] == 1:
        colour = np.repeat(colour, 3, axis=-1)
    return Image.fromarray(np.concatenate([colour, alpha], axis=-1).round().astype(np.uint8), "RGBA")


def _scale_to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """A high-bit-depth grayscale array -> uint8, scaled, never clipped.

    16-bit ("I;16*"): the full 0..65535 range maps to 0..255 (as viewers display it). 32-bit integer
    ("I"): values within 0..255 are kept, within 0..65535 read as 16-bit, anything else stretched from its
    minimum to its maximum. Float ("F"): values within 0..1 are the usual normalised intensities (x 255),
    anything else is stretched from its minimum to its maximum; NaN and infinities count as 0.
    """
    v = values.astype(np.float64)
    if mode == "F":
        v = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        scaled = v / 257.0
    elif mode == "I" and lo >= 0 and hi <= 255:
        scaled = v
    elif mode == "I" and lo >= 0 and hi <= 65535:
        scaled = v / 257.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = v * 255.0
    elif hi > lo:
        scaled = (v - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(v)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
