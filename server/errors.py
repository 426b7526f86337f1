"""Error vocabulary of the service: every failure is JSON ``{"detail": "<field>: <what is wrong>"}``.

Routes raise :class:`ServiceError` subclasses (or FastAPI's ``HTTPException``); the handlers registered by
:func:`install_error_handlers` turn them, request-validation failures and any unexpected exception into
that one shape. A 500 is always a bug: :class:`ErrorEdgeMiddleware` logs the traceback with the request id and
answers ``{"detail": "internal error (request id ...)"}``, no exception text, keeping the connection usable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.request_id import current_request_id

log = logging.getLogger("sam3.server")


class ErrorResponse(BaseModel):
    """Every error the service sends: one line naming the field, e.g. ``"points[0]: expected an [x, y] pair"``."""

    detail: str


_ERROR_MEANINGS = {
    400: "malformed value (bad JSON, wrong shape, out of range, unreadable image or video)",
    403: "video_path outside the allowed media roots (SAM_MEDIA_ROOTS)",
    404: "unknown or expired tracking session, or unknown image_id",
    409: "the request does not fit the session's state",
    413: "body, image or video over the configured limits",
    415: "not an image / video the service reads",
    422: "a missing field or a broken constraint",
    429: "queue full or too many sessions; retry after Retry-After seconds",
    500: "a bug: the detail carries the request id to find the traceback in the log",
    503: "the model is not loaded (still loading, or failed: the detail says why)",
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` for these error statuses, all with the :class:`ErrorResponse` body."""
    return {status: {"model": ErrorResponse, "description": _ERROR_MEANINGS[status]} for status in statuses}


class ServiceError(Exception):
    """An error with an HTTP status and a message that names the offending field."""

    status_code = 400

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})


class BadValue(ServiceError):
    """400: a value that could not be parsed or makes no sense (bad JSON, wrong shape, out of range)."""

    status_code = 400


class Forbidden(ServiceError):
    """403: a path outside the allowed media roots."""

    status_code = 403


class NotFound(ServiceError):
    """404: an unknown (or expired) tracking session."""

    status_code = 404


class Conflict(ServiceError):
    """409: the request does not fit the current state (e.g. a duplicate session id)."""

    status_code = 409


class TooLarge(ServiceError):
    """413: an upload, image or video over the configured limits."""

    status_code = 413


class UnsupportedMedia(ServiceError):
    """415: the bytes or file are not an image / video we can read."""

    status_code = 415


class Unprocessable(ServiceError):
    """422: a well-formed value that breaks a declared constraint (range, length, required)."""

    status_code = 422


class TooBusy(ServiceError):
    """429: too many sessions or too many queued requests; carries ``Retry-After``."""

    status_code = 429

    def __init__(self, detail: str, *, retry_after_s: float):
        super().__init__(detail, headers={"Retry-After": str(max(1, int(round(retry_after_s))))})


class Unavailable(ServiceError):
    """503: the model (or the video predictor) is not loaded; the detail says why."""

    status_code = 503


def format_validation_errors(errors: Sequence[Mapping], empty_form_fields: set[str] = frozenset()) -> str:
    """Turn pydantic/FastAPI error dicts into one line naming each field.

    ``loc`` starts with where the value came from ("body", "query", ...); the field name follows.
    ``empty_form_fields`` are form fields sent with an empty value (reported as "must not be empty").
    """
    parts = []
    for err in errors:
        kind = err.get("type")
        msg = str(err.get("msg", "invalid value"))
        if kind == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "")
            parts.append(f"body: not valid JSON{f' ({reason})' if reason else ''}")
            continue
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header", "form")]
        field = ".".join(loc) or "body"
        if kind == "missing":
            # FastAPI reports a form field sent empty as missing; say what the caller actually did.
            msg = "must not be empty" if field in empty_form_fields else "field required"
        parts.append(f"{field}: {msg}")
    return "; ".join(parts) or "body: invalid"


def _empty_form_fields(body: object) -> set[str]:
    """Names of the form fields that were sent with an empty value (``body`` is the parsed form, if any)."""
    if body is None or isinstance(body, (dict, list, str, bytes)) or not hasattr(body, "multi_items"):
        return set()
    return {name for name, value in body.multi_items() if isinstance(value, str) and value == ""}


async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers or None)


def too_large_detail(scope: Scope, settings) -> str:
    """The 413 message for a body over the limit in force: the upload limit (multipart routes, the file is
    named ``image``) or the JSON-body limit (``/track/*``). The body itself is never echoed."""
    declared = Headers(scope=scope).get("content-length", "")
    size = f" ({int(declared):,} bytes declared)" if declared.isdigit() else ""
    if scope.get("path", "").endswith("/media/upload"):
        return (
            f"file: the upload{size} is over the {settings.max_upload_video_mb:g} MB limit for videos "
            "(SAM_MAX_UPLOAD_VIDEO_MB)"
        )
    if scope.get(MAX_BODY_SIZE_SCOPE_KEY) == settings.max_json_bytes:
        return f"body: the request body{size} is over the {settings.max_json_kb} KB limit for JSON bodies (SAM_MAX_JSON_KB)"
    return f"image: the request body{size} is over the {settings.max_upload_mb:g} MB upload limit (SAM_MAX_UPLOAD_MB)"


def too_large_response(scope: Scope, settings) -> JSONResponse:
    # Connection: close, so the server stops reading a body it will never use.
    return JSONResponse({"detail": too_large_detail(scope, settings)}, status_code=413, headers={"Connection": "close"})


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    status = exc.status_code
    if status == 413:  # the body limiter, counting the bytes received (chunked or not)
        return too_large_response(request.scope, request.app.state.settings)
    if status == 400 and "exceeded maximum size" in detail:
        # Starlette's multipart limit on non-file fields; it does not say which field.
        status, detail = 413, f"form: a form field is too large ({detail})"
    elif status == 400 and "multipart" in detail.lower():
        detail = f"form: {detail}"
    elif status == 400 and isinstance(exc.__cause__, RecursionError):
        detail = "body: JSON nested too deeply"
    elif status == 400 and detail == "There was an error parsing the body":
        detail = "body: could not be parsed"
    return JSONResponse({"detail": detail}, status_code=status, headers=getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    # A body that is not JSON at all is malformed (400); a JSON body with wrong fields is a validation error.
    status = 400 if any(e.get("type") == "json_invalid" for e in errors) else 422
    detail = format_validation_errors(errors, _empty_form_fields(getattr(exc, "body", None)))
    return JSONResponse({"detail": detail}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # Last resort for an exception outside ErrorEdgeMiddleware (in a middleware above it): still JSON.
    app.add_exception_handler(Exception, _unexpected)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "unhandled error outside the routes on %s %s (request id %s)",
        request.method,
        request.url.path,
        current_request_id(),
        exc_info=exc,
    )
    return JSONResponse(internal_error_body(current_request_id()), status_code=500)


def internal_error_body(request_id: str | None) -> dict[str, str]:
    return {"detail": f"internal error (request id {request_id or 'unknown'})"}


class ErrorEdgeMiddleware:
    """The last word on errors, just outside the routes: every error leaves as JSON.

    - Any exception that escapes a route becomes a JSON 500 naming the request id. Starlette's own
      last-resort handler re-raises after answering, so the server drops the keep-alive connection without
      ``Connection: close`` and the client's next call fails; here the exception ends with the response and
      the connection stays usable. The traceback goes to the log (with the request id), never into the body.
      An exception after the response started cannot be answered any more: it propagates, and the server
      closes the connection since the response is incomplete.
    - The body limiter answers a declared ``Content-Length`` over the limit with a plain-text 413 of its
      own; it is replaced by the JSON 413 naming the field.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = replaced = False

        async def guarded_send(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return  # the body of the plain-text answer we replaced
            if message["type"] == "http.response.start":
                started = True
                if message["status"] == 413 and Headers(raw=message["headers"]).get("content-type", "").startswith(
                    "text/plain"
                ):
                    replaced = True
                    await too_large_response(scope, scope["app"].state.settings)(scope, receive, send)
                    return
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            request_id = current_request_id()
            log.exception(
                "unhandled error on %s %s (request id %s)", scope.get("method"), scope.get("path"), request_id
            )
            if started:
                raise
            response = JSONResponse(internal_error_body(request_id), status_code=500)
            await response(scope, receive, send)
