"""GET /metrics: the Prometheus text format (mounted only when ``SAM_METRICS`` is on; 404 otherwise)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}, "description": "metrics"}},
)
def metrics(request: Request) -> Response:
    """Request counts and latencies per route, queue, model lock, caches, sessions, model info."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
