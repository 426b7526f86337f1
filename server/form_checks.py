"""Checks that need the raw form, made once for every image route (mounted as a router dependency).

FastAPI reads a form field sent with an empty value as if it were absent, so a route cannot tell
``text=`` from no ``text`` at all and would answer "field required"; the caller sent it, so the answer is
"must not be empty". FastAPI has already parsed (and cached) the form when dependencies run, so reading it
here costs nothing.
"""

from __future__ import annotations

from fastapi import Request

from server.errors import Unprocessable

# Form fields whose empty value is a mistake worth naming (an empty prompt), not a way to leave them out.
NON_EMPTY_FIELDS = ("text",)


async def refuse_empty_fields(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        return
    form = await request.form()
    for name in NON_EMPTY_FIELDS:
        value = form.get(name)
        if isinstance(value, str) and not value.strip():
            raise Unprocessable(f"{name}: must not be empty")
