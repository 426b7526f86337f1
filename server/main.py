"""The SAM 3 service: ``create_app(settings)`` builds the FastAPI app; ``app`` is the one uvicorn serves.

    uvicorn server.main:app --host 127.0.0.1 --port 8001

Startup never fails because of the model: the lifespan starts loading it (in a background thread by
default, so ``/health`` answers during a long download) and the service reports any failure on ``/health``
and as 503 on the model endpoints.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from server.errors import ErrorEdgeMiddleware, error_responses, install_error_handlers
from server.form_checks import refuse_empty_fields
from server.metrics import MetricsMiddleware, ServiceMetrics
from server.request_id import HEADER as REQUEST_ID_HEADER
from server.request_id import RequestIdFilter, RequestIdMiddleware
from server.routes import health, image, track
from server.routes import everything, export, media, sessions, ui, upload
from server.routes import metrics as metrics_route
from server.routes.docs import install_docs
from server.services.model_service import ModelService
from server.services.tracking_service import TrackingService
from server.services.upload_store import UploadStore
from server.settings import Settings

log = logging.getLogger("sam3.server")

# Room for the multipart framing and the small form fields around the image.
_FORM_OVERHEAD_BYTES = 1024 * 1024


async def _sweep_sessions(tracking: TrackingService, period_s: float) -> None:
    """Close idle sessions even when no /track request arrives to trigger it."""
    while True:
        await anyio.sleep(period_s)
        try:
            await tracking.evict_expired()
        except Exception:  # the sweeper must survive a failing close
            log.exception("session sweep failed")


async def _sweep_uploads(uploads: UploadStore, tracking: TrackingService, period_s: float) -> None:
    """Delete uploads past their retention time (``SAM_UPLOAD_RETENTION_S``) that no open session uses."""
    while True:
        try:
            in_use = {s.video.resource_path for s in list(tracking.sessions.values()) if s.video is not None}
            await anyio.to_thread.run_sync(uploads.sweep, in_use)
        except Exception:  # the sweeper must survive a failing delete
            log.exception("upload sweep failed")
        await anyio.sleep(period_s)


def _show_service_logs() -> None:
    """Print the service's INFO lines (model loaded, sessions expired) when nobody configured logging; each
    line carries the id of the request it belongs to (``-`` outside a request)."""
    logger = logging.getLogger("sam3")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s [%(request_id)s] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _timed_load(app: FastAPI, models: ModelService) -> None:
    started = time.perf_counter()
    models.load()
    app.state.model_load_seconds = time.perf_counter() - started


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. ``settings=None`` reads them from the environment / ``.env``."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _show_service_logs()
        log.info(
            "media roots that /track/start may read (SAM_MEDIA_ROOTS): %s",
            ", ".join(str(root) for root in settings.media_root_paths),
        )
        models = ModelService(settings)
        tracking = TrackingService(settings, models)
        app.state.settings, app.state.models, app.state.tracking = settings, models, tracking
        uploads = app.state.uploads = UploadStore(settings)
        tracking.on_free.append(uploads.session_closed)
        if settings.metrics:
            models.on_call = app.state.metrics.observe_model_call
        if settings.load_in_background:
            models.loading = True  # report "loading" from the first /health on
            threading.Thread(target=_timed_load, args=(app, models), name="sam3-model-load", daemon=True).start()
        else:
            await anyio.to_thread.run_sync(_timed_load, app, models)
        async with anyio.create_task_group() as tasks:
            sweep_s = min(60.0, settings.session_ttl_s / 2, settings.session_heartbeat_s / 4)
            tasks.start_soon(_sweep_sessions, tracking, sweep_s)
            tasks.start_soon(_sweep_uploads, uploads, tracking, min(60.0, max(1.0, settings.upload_retention_s / 2)))
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await tracking.close_all()

    app = FastAPI(
        title="SAM 3 service",
        version="0.1.0",
        summary="Segment Anything 3: click, box and text segmentation of images, and video object tracking.",
        lifespan=lifespan,
        # Every route may fail these ways; the body is always {"detail": "..."} (also for 422: a string).
        responses=error_responses(413, 422, 500),
        docs_url=None,  # served offline by install_docs (no CDN)
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    _add_middleware(app, settings)

    # Body limits are counted on the bytes received (chunked bodies too) by FastAPI's own limiter, set per
    # router: include a router whose routes take a body with max_body_size=... (an app-wide limit would sit
    # outside the middleware and answer a plain-text 413 without X-Request-ID). server.errors writes the 413.
    upload_limit = settings.max_upload_bytes + _FORM_OVERHEAD_BYTES
    app.include_router(health.router)
    app.include_router(
        image.router,
        max_body_size=upload_limit,
        dependencies=[Depends(refuse_empty_fields)],
        responses=error_responses(400, 404, 415, 429, 503),
    )
    app.include_router(
        everything.router,
        max_body_size=upload_limit,
        dependencies=[Depends(refuse_empty_fields)],
        responses=error_responses(400, 404, 415, 429, 503),
    )
    app.include_router(
        track.router, max_body_size=settings.max_json_bytes, responses=error_responses(400, 403, 404, 409, 429, 503)
    )
    app.include_router(sessions.router, max_body_size=settings.max_json_bytes, responses=error_responses(404, 409))
    app.include_router(export.router, max_body_size=settings.max_json_bytes, responses=error_responses(400, 404, 409))
    app.include_router(
        upload.router,
        max_body_size=settings.max_upload_video_bytes + _FORM_OVERHEAD_BYTES,
        responses=error_responses(400, 415),
    )
    app.include_router(media.router, responses=error_responses(400, 403, 415))
    app.include_router(ui.router)
    if settings.metrics:
        app.include_router(metrics_route.router)
    install_docs(app)
    return app


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    """The HTTP edge, outermost first: request id, metrics, CORS, JSON errors (so that a 500 carries
    the CORS headers and is counted with its status)."""
    app.add_middleware(ErrorEdgeMiddleware)  # added first = innermost
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origin_list,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["X-Mask-Score", "X-Object-Count", "X-Image-ID", "X-Refined", "Retry-After", REQUEST_ID_HEADER],
    )
    if settings.metrics:
        app.state.metrics = ServiceMetrics(app.state)
        app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestIdMiddleware)


app = create_app()
