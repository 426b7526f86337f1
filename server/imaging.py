"""Image bytes in, masks out: upload decoding with limits, and the PNG / base64 mask encodings of the contract.

Decoding order matters for safety: the pixel count is checked from the header *before* any pixel is
decoded, so a small file that declares a huge size (a decompression bomb) costs nothing. PIL's own global
``Image.MAX_IMAGE_PIXELS`` is left untouched (no global state changes); our limit is
``SAM_MAX_IMAGE_PIXELS`` and PIL's hard guard (2x its default, ~179 MP) stays as a second fence.
"""

from __future__ import annotations

import io
import struct

from PIL import Image, UnidentifiedImageError

from server.errors import BadValue, TooLarge, UnsupportedMedia

# Magic numbers of formats PIL reads: a file that starts like an image but cannot be opened is a broken
# image (400), anything else is not an image at all (415).
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


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


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, field: str = "image") -> Image.Image:
    """Decode uploaded bytes into an RGB PIL image, enforcing the service limits.

    Raises 413 (bytes or pixels over the limit), 415 (not an image) or 400 (empty, truncated, corrupt,
    or a zero-sized image). Multi-frame files (GIF, TIFF) give their first frame.
    """
    if not data:
        raise BadValue(f"{field}: the upload is empty")
    if len(data) > max_bytes:
        raise TooLarge(
            f"{field}: the upload is {len(data) / 2**20:.1f} MB, over the {max_bytes / 2**20:.1f} MB limit "
            "(SAM_MAX_UPLOAD_MB)"
        )
    kind = _sniff(data)
    if kind == "PNG":
        size = _png_declared_size(data)
        if size is not None and (size[0] == 0 or size[1] == 0):
            raise BadValue(f"{field}: the PNG declares a {size[0]}x{size[1]} size; width and height must be > 0")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"{field}: {exc}") from None
    except UnidentifiedImageError:
        if kind is not None:
            raise BadValue(f"{field}: corrupt {kind} data (the header could not be parsed)") from None
        raise UnsupportedMedia(f"{field}: not an image (expected PNG, JPEG, WEBP, BMP, GIF or TIFF bytes)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadValue(f"{field}: corrupt image data ({exc})") from None

    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadValue(f"{field}: the image is {width}x{height}; width and height must be > 0")
    if width * height > max_pixels:
        raise TooLarge(
            f"{field}: {width}x{height} = {width * height:,} pixels, over the {max_pixels:,} pixel limit "
            "(SAM_MAX_IMAGE_PIXELS)"
        )
    try:
        image.load()
        return image.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"{field}: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadValue(f"{field}: truncated or corrupt {image.format or 'image'} data ({exc})") from None
