"""What both clients share: the service address, timeouts, and turning HTTP failures into clear errors.

Error messages are meant to be shown to a person as they are:

* 4xx: the service's own message (it names the field), e.g. ``points[0]: expected an [x, y] pair``;
* 503: ``model not loaded: <reason>`` (or ``video predictor not available: <reason>``);
* nothing listening: the service is not running at <url>, and how to start it.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

DEFAULT_SERVICE_URL = "http://localhost:8001"


class SamServiceError(RuntimeError):
    """A request to the SAM 3 service failed; ``status_code`` is None when no HTTP answer came back."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class SamServiceNotRunning(SamServiceError):
    """Nothing answers at the service address (connection refused / unknown host)."""


class SamModelNotLoaded(SamServiceError):
    """503: the service runs but its model (or video predictor) is not loaded; the message says why."""


class SamServiceBusy(SamServiceError):
    """429: too many sessions or queued requests; ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, retry_after_s: float | None):
        super().__init__(message, 429)
        self.retry_after_s = retry_after_s


def service_url(base_url: str | None = None) -> str:
    return (base_url or os.environ.get("SAM_SERVICE_URL") or DEFAULT_SERVICE_URL).rstrip("/")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else str(detail)
    return str(body)[:500]


class ServiceClient:
    """A thin httpx wrapper: one ``httpx.Client`` per manager, errors mapped as described above.

    ``timeout`` is the read timeout in seconds (a first request on a CPU may take minutes while the
    model warms up); connecting is given ``connect_timeout`` seconds.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 300.0,
        connect_timeout: float = 5.0,
        client: httpx.Client | None = None,
    ):
        self.base_url = service_url(base_url)
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._client = client or httpx.Client(base_url=self.base_url, timeout=self.timeout)
        self._owns_client = client is None

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.base_url}{path}"
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.ConnectError as exc:
            raise SamServiceNotRunning(
                f"the SAM 3 service is not running at {self.base_url} ({exc}). Start it with ./run_sam.sh "
                "(it serves on SAM_SERVICE_HOST:SAM_SERVICE_PORT, default 127.0.0.1:8001), or point "
                "SAM_SERVICE_URL at the address where it runs"
            ) from None
        except httpx.TimeoutException as exc:
            raise SamServiceError(
                f"the SAM 3 service at {self.base_url} did not answer {method} {path} in time "
                f"({type(exc).__name__}; read timeout {self.timeout.read} s)"
            ) from None
        except httpx.HTTPError as exc:
            raise SamServiceError(f"request to the SAM 3 service at {self.base_url} failed: {exc}") from None
        if response.is_success:
            return response
        detail = _detail(response)
        status = response.status_code
        if status == 503:
            if not (detail.startswith("model not loaded") or detail.startswith("video predictor not available")):
                detail = f"model not loaded: {detail}"
            raise SamModelNotLoaded(detail, 503)
        if status == 429:
            retry = response.headers.get("Retry-After")
            raise SamServiceBusy(detail, float(retry) if retry and retry.replace(".", "", 1).isdigit() else None)
        if 400 <= status < 500:
            raise SamServiceError(detail, status)
        raise SamServiceError(f"SAM 3 service error {status} on {method} {path}: {detail}", status)

    def health(self) -> dict:
        return self.request("GET", "/health").json()
