"""The backend's SAM routes (description, section 5.4) as one ``APIRouter`` to mount:

    app.include_router(create_sam_router("http://127.0.0.1:8001", export_root="/srv/milimo"))

| backend route            | service route      | body                                                    |
|--------------------------|--------------------|---------------------------------------------------------|
| ``POST /edit/segment``      | ``/predict/mask``  | multipart, every field and file forwarded as received |
| ``POST /edit/detect``       | ``/detect``        | multipart                                             |
| ``POST /edit/segment-text`` | ``/segment/text``  | multipart                                             |
| ``POST /track/<action>``    | ``/track/<action>``| JSON, forwarded byte for byte; ``start``, ``prompt``, ``propagate``, ``stop`` (the description's), and ``cancel``, ``frames``, ``remove_object``, ``reset`` |
| ``POST /edit/track/save``   | ``/track/frames`` when no frames are given | JSON ``TrackingSaveRequest`` |

The service's answer comes back as it is: status, body, and its headers that matter (content type,
``X-Mask-Score``, ``X-Object-Count``, ``X-Image-ID``, ``X-Refined``, ``Retry-After``, ``X-Request-ID``); a propagation with
``"stream": true`` is streamed through line by line, and a caller that disconnects disconnects the service
(which stops the propagation). Idempotent calls (the image routes, ``stop``, ``frames``, ...) are retried on
429 / 503-while-loading / connection refused as ``retry.py`` says, within ``timeout``; when the service
cannot be reached the answer is 502 (504 when the budget ran out), ``{"detail": ...}`` as always.

``/edit/track/save`` writes ``<export_root>/exports/tracking/<session_id>/masks/<frame>_<obj>.png`` and
``manifest.json`` there (``export.py``): the session id must be a plain name, frame and object ids integers,
and nothing is written outside ``export_root``.

FastAPI is an optional extra: ``pip install "milimo-clients[fastapi]"``.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import anyio
import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from milimo_clients.base import AsyncServiceClient
from milimo_clients.call import Call
from milimo_clients.errors import SamServiceError, SamServiceTimeout, json_body
from milimo_clients.export import export_session
from milimo_clients.retry import DEFAULT_RETRY, RetryPolicy

PASSED_HEADERS = (
    "content-type",
    "x-mask-score",
    "x-object-count",
    "x-image-id",
    "x-refined",
    "retry-after",
    "x-request-id",
)
IMAGE_ROUTES = {"/edit/segment": "/predict/mask", "/edit/detect": "/detect", "/edit/segment-text": "/segment/text"}
_PROMPTS = ("text", "texts", "boxes", "box_labels", "confidence")
IMAGE_FIELDS = {  # documented in /docs; every field the caller sends is forwarded, listed here or not
    "/edit/segment": ("points", "labels", "boxes", "multimask", "object_id", "refine", "return_logits"),
    "/edit/detect": (*_PROMPTS, "mask_format"),
    "/edit/segment-text": (*_PROMPTS, "object_indices"),
}


def _multipart_doc(fields: tuple[str, ...]) -> dict[str, Any]:
    properties: dict[str, Any] = {"image": {"type": "string", "format": "binary"}, "image_id": {"type": "string"}}
    properties.update({name: {"type": "string"} for name in fields})
    return {
        "requestBody": {"content": {"multipart/form-data": {"schema": {"type": "object", "properties": properties}}}}
    }


TRACK_ACTIONS = {  # action -> may be retried (changes nothing when repeated)
    "start": False,
    "prompt": False,
    "propagate": False,
    "stop": True,
    "cancel": True,
    "frames": True,
    "remove_object": True,
    "reset": True,
}


class TrackingSaveRequest(BaseModel):
    """Body of ``/edit/track/save``. Without ``frames`` the service's stored results are fetched
    (``/track/frames`` with ``start``/``end``); with them (frame objects as ``/track/propagate`` returns,
    PNG or RLE masks) those are written."""

    session_id: str = Field(description="the tracking session; also the export folder's name")
    frames: list[dict[str, Any]] | None = Field(default=None, description="frame objects to save")
    start: int | None = Field(default=None, description="first frame to fetch when frames are not given")
    end: int | None = Field(default=None, description="last frame to fetch when frames are not given")


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _passthrough(response: httpx.Response) -> Response:
    headers = {name: response.headers[name] for name in PASSED_HEADERS if name in response.headers}
    return Response(content=response.content, status_code=response.status_code, headers=headers)


def _failure(exc: SamServiceError) -> Response:
    if exc.response is not None:  # the service answered: its status and message, unchanged
        return _passthrough(exc.response)
    return _error(504 if isinstance(exc, SamServiceTimeout) else 502, exc.message)


class _Upstream(AsyncServiceClient):
    """The service behind the router. httpx pools connections per event loop, so a client made on one
    loop is not used on another (a test client's loop, then the server's)."""

    def __init__(self, service_url: str | None, client: httpx.AsyncClient | None, **kwargs: Any):
        super().__init__(service_url, client=client, **kwargs)
        self._given = client is not None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> httpx.AsyncClient:
        if not self._given:
            loop = asyncio.get_running_loop()
            if self._loop is not loop:
                self._client, self._loop = httpx.AsyncClient(), loop
        return self._client

    async def send(self, call: Call) -> Response:
        self.client()
        try:
            return _passthrough(await self._send(call))
        except SamServiceError as exc:
            return _failure(exc)


def _forward_headers(request: Request) -> dict[str, str]:
    wanted = ("content-type", "x-request-id")
    return {name: request.headers[name] for name in wanted if name in request.headers}


async def _form_parts(request: Request) -> tuple[list, dict[str, list[str]]]:
    """Every form field and file as received (file bytes, names and types untouched)."""
    form = await request.form()
    files, data = [], {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.append(
                (key, (value.filename or key, await value.read(), value.content_type or "application/octet-stream"))
            )
        else:
            data.setdefault(key, []).append(value)
    return files, data


def create_sam_router(
    service_url: str | None = None,
    export_root: str | os.PathLike = ".",
    *,
    timeout: float = 300.0,
    stream_timeout: float = 1800.0,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    client: httpx.AsyncClient | None = None,
) -> APIRouter:
    """An ``APIRouter`` serving the description's 5.4 routes as proxies to the service at ``service_url``
    (default ``SAM_SERVICE_URL``); ``/edit/track/save`` writes under ``export_root``.

    ``timeout``: total budget of one proxied call, retries included; ``stream_timeout``: longest silence
    between two lines of a streamed propagation (and budget of a plain one).
    """
    upstream = _Upstream(service_url, client, timeout=timeout, retry=retry)
    tracking = _Upstream(service_url, client, timeout=stream_timeout, retry=retry)
    router = APIRouter(tags=["SAM 3"])

    def image_route(backend_path: str, service_path: str) -> None:
        async def proxy(request: Request) -> Response:
            files, data = await _form_parts(request)
            refine = any(v.lower() in ("true", "1") for v in data.get("refine", []))
            call = Call(
                "POST",
                service_path,
                parse=lambda r: r,
                idempotent=not refine,
                data=data,
                files=files or None,
                headers={k: v for k, v in _forward_headers(request).items() if k != "content-type"},
            )
            return await upstream.send(call)

        proxy.__name__ = "proxy_" + backend_path.strip("/").replace("/", "_").replace("-", "_")
        router.add_api_route(
            backend_path,
            proxy,
            methods=["POST"],
            summary=f"Proxy to the SAM service's {service_path} (multipart)",
            openapi_extra=_multipart_doc(IMAGE_FIELDS[backend_path]),
        )

    for backend_path, service_path in IMAGE_ROUTES.items():
        image_route(backend_path, service_path)

    def track_route(action: str, idempotent: bool) -> None:
        async def proxy(request: Request) -> Response:
            body = await request.body()
            call = Call(
                "POST",
                f"/track/{action}",
                parse=lambda r: r,
                idempotent=idempotent,
                content=body,
                headers=_forward_headers(request),
            )
            if action == "propagate" and _wants_stream(body):
                return await _stream(tracking, call, stream_timeout)
            return await tracking.send(call)

        proxy.__name__ = f"proxy_track_{action}"
        summary = f"Proxy to the SAM service's /track/{action} (JSON body forwarded as is)"
        if action == "propagate":
            summary += '; with "stream": true the NDJSON lines are passed through as they come'
        router.add_api_route(
            f"/track/{action}",
            proxy,
            methods=["POST"],
            summary=summary,
            openapi_extra={
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
            },
        )

    for action, idempotent in TRACK_ACTIONS.items():
        track_route(action, idempotent)

    @router.post(
        "/edit/track/save",
        summary="Save tracking masks as exports/tracking/<session_id>/masks/<frame>_<obj>.png and manifest.json",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": TrackingSaveRequest.model_json_schema()}},
            }
        },
    )
    async def save(request: Request) -> Response:
        try:
            raw = json.loads(await request.body())
        except ValueError:
            return _error(400, "body: expected a JSON object")
        if not isinstance(raw, dict):
            return _error(400, "body: expected a JSON object")
        problem = _save_request_problem(raw)
        if problem:
            return _error(422, problem)
        frames = raw.get("frames")
        if frames is None:
            fetch = {"session_id": raw["session_id"], **{k: raw[k] for k in ("start", "end") if raw.get(k) is not None}}
            call = Call("POST", "/track/frames", parse=lambda r: r, idempotent=True, json=fetch)
            tracking.client()
            try:
                frames = json_body(await tracking._send(call), "POST", "/track/frames").get("frames")
            except SamServiceError as exc:
                return _failure(exc)
            if not isinstance(frames, list):
                return _error(502, "frames: the service's /track/frames answer has no frame list")
        try:
            folder, manifest = await anyio.to_thread.run_sync(export_session, export_root, raw["session_id"], frames)
        except PermissionError as exc:
            return _error(403, str(exc))
        except ValueError as exc:
            return _error(400, str(exc))
        rel = f"exports/tracking/{folder.name}"
        return JSONResponse(
            {
                "session_id": raw["session_id"],
                "path": rel,
                "manifest": f"{rel}/manifest.json",
                "num_frames": manifest["num_frames"],
                "num_masks": manifest["num_masks"],
            }
        )

    return router


def _save_request_problem(raw: dict[str, Any]) -> str | None:
    """What is wrong with a save request, naming the field; None when it is well-formed."""
    from milimo_clients.export import check_session_id

    unknown = set(raw) - set(TrackingSaveRequest.model_fields)
    if unknown:
        return f"{sorted(unknown)[0]}: unknown field"
    try:
        check_session_id(raw.get("session_id"))
    except ValueError as exc:
        return str(exc)
    for key in ("start", "end"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31):
            return f"{key}: expected a frame index (integer >= 0)"
    frames = raw.get("frames")
    if frames is not None and (not isinstance(frames, list) or not all(isinstance(f, dict) for f in frames)):
        return "frames: expected a list of frame objects"
    return None


def _wants_stream(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("stream") is True


async def _stream(upstream: _Upstream, call: Call, stream_timeout: float) -> Response:
    """The service's NDJSON passed through chunk by chunk; closing either side closes the other."""
    client = upstream.client()
    request = client.build_request(
        call.method,
        f"{upstream.base_url}{call.path}",
        timeout=upstream._http_timeout(stream_timeout),
        **call.request_kwargs(),
    )
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        return _failure(upstream._transport_error(exc, call))
    if not response.is_success or "ndjson" not in response.headers.get("content-type", ""):
        await response.aread()
        await response.aclose()
        return _passthrough(response)

    async def chunks():
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:  # the service went away mid-stream: say so as the contract's last line
            yield (json.dumps({"event": "error", "status": 502, "detail": f"stream: {exc}"}) + "\n").encode()
        finally:
            await response.aclose()

    headers = {name: response.headers[name] for name in PASSED_HEADERS if name in response.headers}
    return StreamingResponse(chunks(), status_code=response.status_code, headers=headers)
