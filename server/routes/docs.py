"""``/docs`` (Swagger UI) and ``/redoc`` served with no internet: FastAPI's self-hosting recipe, with the
assets of the ``fastapi-offline`` package (Swagger UI 5, ReDoc 2) instead of a CDN.

ReDoc's bundle still names one external file, the logo of its "API docs by Redocly" link
(``https://cdn.redoc.ly/redoc/logo-mini.svg``): ``/redoc`` loads a copy of the bundle with that address replaced
by an inline SVG, so the page makes no request outside the service at all (tests/ui/test_editor_page.py).

``create_app`` builds the app with ``docs_url=None, redoc_url=None`` and calls ``install_docs(app)``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
REDOC_JS_URL = "/docs-offline/redoc.standalone.js"
REDOC_CDN_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
# a small grey "R" badge in place of Redocly's logo (a data URI: no request)
LOCAL_LOGO = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Crect width='16' "
    "height='16' rx='3' fill='%23999'/%3E%3Ctext x='8' y='12' font-size='10' text-anchor='middle' "
    "fill='white'%3ER%3C/text%3E%3C/svg%3E"
)

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        # No validator badge: it would fetch an image from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None, **(request.app.swagger_ui_parameters or {})},
    )


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{REDOC_JS_URL}",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )


@cache
def _offline_redoc_bundle() -> bytes:
    return (ASSETS_DIR / "redoc.standalone.js").read_bytes().replace(REDOC_CDN_LOGO.encode(), LOCAL_LOGO.encode())


@router.get(REDOC_JS_URL)
async def redoc_bundle() -> Response:
    return Response(
        _offline_redoc_bundle(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"}
    )


def install_docs(app: FastAPI) -> None:
    """Add the offline documentation pages and their assets to ``app`` (built with docs_url=None, redoc_url=None)."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    app.include_router(router)
