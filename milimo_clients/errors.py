"""The clients' error vocabulary and the one mapping from an HTTP answer (or its absence) to it.

Messages are meant to be shown to a person as they are:

* 4xx: the service's own message (it names the field), e.g. ``points[0]: expected an [x, y] pair``;
* 503 from the service: ``model not loaded: <reason>`` (or ``video predictor not available: <reason>``);
  a 503 from something else on the way (an HTML page from a proxy) is ``SamServiceUnavailable``, not
  "model not loaded";
* a 2xx whose body is not what the contract says (HTML from a proxy, truncated JSON): ``SamProtocolError``;
* nothing listening: the service is not running at <url>, and how to start it;
* the call's time budget spent: ``SamServiceTimeout``.

Both the sync and the async clients raise exactly these, from :func:`error_for_response`.
"""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import httpx


class SamServiceError(RuntimeError):
    """A request to the SAM 3 service failed; ``status_code`` is None when no HTTP answer came back.

    ``response`` is the HTTP answer when there was one (the router passes it through as it is).
    """

    def __init__(self, message: str, status_code: int | None = None, *, response: httpx.Response | None = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.response = response


class SamServiceNotRunning(SamServiceError):
    """Nothing answers at the service address (connection refused / unknown host)."""


class SamServiceTimeout(SamServiceError):
    """The call's total time budget (``timeout``) ran out, retries and slow answers included."""


class SamProtocolError(SamServiceError):
    """A successful status whose body is not what the contract promises (e.g. HTML instead of JSON)."""


class SamServiceUnavailable(SamServiceError):
    """503 that is not the SAM service's own answer (e.g. a proxy's HTML page); ``retry_after_s`` if given."""

    def __init__(self, message: str, retry_after_s: float | None = None, *, response: httpx.Response | None = None):
        super().__init__(message, 503, response=response)
        self.retry_after_s = retry_after_s


class SamModelNotLoaded(SamServiceUnavailable):
    """503 from the SAM service: its model (or video predictor) is not loaded; the message says why.

    ``retry_after_s`` is set while the model is still loading (the service says when to come back) and None
    when loading failed for good (a missing checkpoint: retrying will not help).
    """


class SamServiceBusy(SamServiceError):
    """429: too many sessions or queued requests; ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, retry_after_s: float | None, *, response: httpx.Response | None = None):
        super().__init__(message, 429, response=response)
        self.retry_after_s = retry_after_s


_SERVICE_503_PREFIXES = ("model not loaded", "video predictor not available")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds from now: delta-seconds or an HTTP date (RFC 9110 10.2.3); None if absent/bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if seconds == seconds else None  # NaN -> None


def _json_detail(response: httpx.Response) -> str | None:
    """The contract's ``{"detail": "..."}`` when the body is that JSON, else None."""
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return body["detail"]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return None


def _snippet(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return (text[:200] + "...") if len(text) > 200 else (text or response.reason_phrase)


def error_for_response(response: httpx.Response, method: str, path: str, base_url: str) -> SamServiceError:
    """The error for a non-2xx answer (callers check ``is_success`` first)."""
    status = response.status_code
    detail = _json_detail(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 503:
        if detail is not None and detail.startswith(_SERVICE_503_PREFIXES):
            return SamModelNotLoaded(detail, retry_after, response=response)
        where = f"{method} {path} at {base_url}"
        what = (
            f"the SAM service said: {detail}"
            if detail is not None
            else f"not the SAM service's answer: {_snippet(response)}"
        )
        return SamServiceUnavailable(f"service unavailable (503) on {where}; {what}", retry_after, response=response)
    message = detail if detail is not None else f"HTTP {status} on {method} {path}: {_snippet(response)}"
    if status == 429:
        return SamServiceBusy(message, retry_after, response=response)
    if 400 <= status < 500:
        return SamServiceError(message, status, response=response)
    return SamServiceError(f"SAM 3 service error {status} on {method} {path}: {message}", status, response=response)


def json_body(response: httpx.Response, method: str, path: str) -> dict:
    """The JSON object of a 2xx answer, or ``SamProtocolError`` saying what came instead."""
    kind = response.headers.get("content-type", "no content-type")
    try:
        body = response.json()
    except ValueError:
        raise SamProtocolError(
            f"{method} {path}: expected a JSON answer, got {kind} (HTTP {response.status_code}): {_snippet(response)}",
            response.status_code,
            response=response,
        ) from None
    if not isinstance(body, dict):
        raise SamProtocolError(
            f"{method} {path}: expected a JSON object, got {type(body).__name__}",
            response.status_code,
            response=response,
        )
    return body


def png_body(response: httpx.Response, method: str, path: str) -> bytes:
    """The PNG of a 2xx answer, or ``SamProtocolError`` when something else came (e.g. an HTML page)."""
    if not response.content.startswith(b"\x89PNG\r\n\x1a\n"):
        kind = response.headers.get("content-type", "no content-type")
        raise SamProtocolError(
            f"{method} {path}: expected a PNG mask, got {kind} (HTTP {response.status_code}): {_snippet(response)}",
            response.status_code,
            response=response,
        )
    return response.content


def missing_field(
    exc: KeyError | TypeError | ValueError, method: str, path: str, response: httpx.Response
) -> SamProtocolError:
    return SamProtocolError(
        f"{method} {path}: unexpected answer ({type(exc).__name__}: {exc})", response.status_code, response=response
    )


def error_for_status(status: int, detail: str, retry_after_s: float | None = None) -> SamServiceError:
    """The error for a status and detail that came inside a body (the last line of a failed stream)."""
    if status == 503:
        if detail.startswith(_SERVICE_503_PREFIXES):
            return SamModelNotLoaded(detail, retry_after_s)
        return SamServiceUnavailable(detail, retry_after_s)
    if status == 429:
        return SamServiceBusy(detail, retry_after_s)
    return SamServiceError(detail, status)
