"""The service's own web page: GET /ui (plain HTML, CSS and JavaScript from ``server/static``, no build step);
GET / redirects there."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["ui"])
router.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/ui")


@router.get("/ui", include_in_schema=False)
def page() -> FileResponse:
    # no-cache: a reloaded page picks up a new version of the service's page at once.
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
