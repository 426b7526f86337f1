"""Assertions shared across the suite."""

from __future__ import annotations


def assert_error(response, status: int, field: str, *, at_start: bool = False) -> str:
    """The service's error shape: ``status``, a JSON body whose ``detail`` is a string naming ``field`` (at its
    start when ``at_start``). Returns the detail."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.headers["content-type"]
    detail = response.json()["detail"]
    assert isinstance(detail, str), detail
    assert detail.startswith(field) if at_start else field in detail, detail
    return detail
