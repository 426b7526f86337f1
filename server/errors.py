"""Error vocabulary of the service: every failure is JSON ``{"detail": "<field>: <what is wrong>"}``.

Routes raise :class:`ServiceError` subclasses (or FastAPI's ``HTTPException``); the handlers registered by
:func:`install_error_handlers` turn them, request-validation failures and any unexpected exception into
that one shape. A 500 is always a bug, so the catch-all handler logs the traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("sam3.server")


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


def format_validation_errors(errors: Sequence[Mapping]) -> str:
    """Turn pydantic/FastAPI error dicts into one line naming each field.

    ``loc`` starts with where the value came from ("body", "query", ...); the field name follows.
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
            msg = "field required"
        parts.append(f"{field}: {msg}")
    return "; ".join(parts) or "body: invalid"


async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers or None)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    status = exc.status_code
    if status == 400 and "exceeded maximum size" in detail:
        # Starlette's multipart limit on non-file fields; it does not say which field.
        status, detail = 413, f"form: a form field is too large ({detail})"
    elif status == 400 and "multipart" in detail.lower():
        detail = f"form: {detail}"
    return JSONResponse({"detail": detail}, status_code=status, headers=getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    # A body that is not JSON at all is malformed (400); a JSON body with wrong fields is a validation error.
    status = 400 if any(e.get("type") == "json_invalid" for e in errors) else 422
    return JSONResponse({"detail": format_validation_errors(errors)}, status_code=status)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
