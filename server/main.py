"""The SAM 3 service: ``create_app(settings)`` builds the FastAPI app; ``app`` is the one uvicorn serves.

    uvicorn server.main:app --host 127.0.0.1 --port 8001

Startup never fails because of the model: the lifespan starts loading it (in a background thread by
default, so ``/health`` answers during a long download) and the service reports any failure on ``/health``
and as 503 on the model endpoints.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import install_error_handlers
from server.routes import health, image, track
from server.routes import media, ui
from server.services.model_service import ModelService
from server.services.tracking_service import TrackingService
from server.settings import Settings

log = logging.getLogger("sam3.server")

# Room for the multipart framing and the small form fields around the image.
_FORM_OVERHEAD_BYTES = 1024 * 1024


class BodySizeLimit:
    """Refuse a request whose declared ``Content-Length`` is over the upload limit with 413, before reading it.

    Bodies without a length (chunked) are caught by the per-file check in the image routes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope.get("headers") or ()).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                limit_mb = (self.max_bytes - _FORM_OVERHEAD_BYTES) / 2**20
                response = JSONResponse(
                    {"detail": f"image: the request body is {int(length) / 2**20:.1f} MB, over the "
                     f"{limit_mb:g} MB upload limit (SAM_MAX_UPLOAD_MB)"},
                    status_code=413,
                    headers={"Connection": "close"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _sweep_sessions(tracking: TrackingService, period_s: float) -> None:
    """Close idle sessions even when no /track request arrives to trigger it."""
    while True:
        await anyio.sleep(period_s)
        try:
            await tracking.evict_expired()
        except Exception:  # the sweeper must survive a failing close
            log.exception("session sweep failed")


def _show_service_logs() -> None:
    """Print the service's INFO lines (model loaded, sessions expired) when nobody configured logging."""
    logger = logging.getLogger("sam3")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. ``settings=None`` reads them from the environment / ``.env``."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _show_service_logs()
        models = ModelService(settings)
        tracking = TrackingService(settings, models)
        app.state.settings, app.state.models, app.state.tracking = settings, models, tracking
        if settings.load_in_background:
            models.loading = True  # report "loading" from the first /health on
            threading.Thread(target=models.load, name="sam3-model-load", daemon=True).start()
        else:
            await anyio.to_thread.run_sync(models.load)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_sweep_sessions, tracking, min(60.0, settings.session_ttl_s / 2))
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
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + _FORM_OVERHEAD_BYTES)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origin_list,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["X-Mask-Score", "X-Object-Count", "Retry-After"],
    )
    app.include_router(health.router)
    app.include_router(image.router)
    app.include_router(track.router)
    app.include_router(media.router)
    app.include_router(ui.router)
    return app


app = create_app()
