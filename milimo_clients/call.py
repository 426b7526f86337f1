"""A request to the service described once (``Call``), and image inputs turned into an upload part.

The managers' methods build a ``Call`` (what to send, whether it may be retried, how to read the answer);
the sync and async clients in ``base.py`` only differ in how they send it. So request building and answer
parsing exist once, for both.
"""

from __future__ import annotations

import io
import json
import mimetypes
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

from milimo_clients.errors import SamServiceError

if TYPE_CHECKING:  # pragma: no cover
    import httpx
    from PIL.Image import Image as PILImage

#: What the image methods accept: a path, the encoded bytes, an open binary file, or a PIL image.
ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], "PILImage"]


@dataclass(frozen=True)
class Call:
    """One HTTP call: ``parse(response)`` turns a 2xx answer into the method's result."""

    method: str
    path: str
    parse: Callable[[httpx.Response], Any]
    idempotent: bool
    json: dict[str, Any] | None = None
    data: dict[str, str | list[str]] | None = None
    files: dict[str, tuple[str, bytes, str]] | list[tuple[str, tuple[str, bytes, str]]] | None = field(
        default=None, repr=False
    )
    content: bytes | None = field(default=None, repr=False)  # a body passed through as it is (the router)
    headers: dict[str, str] | None = None

    def request_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.content is not None:
            kwargs["content"] = self.content
        if self.headers:
            kwargs["headers"] = self.headers
        if self.json is not None:
            kwargs["json"] = self.json
        if self.data:
            kwargs["data"] = self.data
        if self.files:
            kwargs["files"] = self.files
        return kwargs


def plain_json(value: Any) -> Any:
    """Tuples, numpy arrays and numpy scalars as plain JSON values (lists, ints, floats)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def form_json(value: Any) -> str:
    return json.dumps(plain_json(value))


def image_part(image: ImageInput, name: str = "image") -> tuple[str, bytes, str]:
    """``(filename, bytes, content type)`` of an image input; an unusable input is a ``SamServiceError``
    naming ``name`` (no HTTP call is made)."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SamServiceError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
        return path.name, data, mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        return f"{name}{_suffix(data)}", data, _mime(data)
    if hasattr(image, "save") and hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")  # lossless: the service sees exactly these pixels
        return f"{name}.png", buffer.getvalue(), "image/png"
    if hasattr(image, "read"):
        data = image.read()
        if not isinstance(data, (bytes, bytearray)):
            raise SamServiceError(f"{name}: the file object must be opened in binary mode")
        filename = Path(str(getattr(image, "name", name))).name
        return filename, bytes(data), mimetypes.guess_type(filename)[0] or _mime(bytes(data))
    raise SamServiceError(
        f"{name}: expected a path, bytes, a binary file object or a PIL image, got {type(image).__name__}"
    )


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", ".png", "image/png"),
    (b"\xff\xd8\xff", ".jpg", "image/jpeg"),
    (b"RIFF", ".webp", "image/webp"),
    (b"GIF8", ".gif", "image/gif"),
    (b"BM", ".bmp", "image/bmp"),
)


def _suffix(data: bytes) -> str:
    return next((suffix for magic, suffix, _ in _MAGIC if data.startswith(magic)), "")


def _mime(data: bytes) -> str:
    return next((mime for magic, _, mime in _MAGIC if data.startswith(magic)), "application/octet-stream")


def input_stem(image: ImageInput | None) -> str:
    """A file-name stem for masks saved from ``image`` (its own name when it has one)."""
    if isinstance(image, (str, os.PathLike)):
        return Path(image).stem
    name = getattr(image, "name", None) or getattr(image, "filename", None)
    return Path(str(name)).stem if name else "image"
