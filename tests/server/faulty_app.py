"""The real app (settings from the environment) plus routes that fail the way a bug would, so the tests can
check what an unexpected exception looks like from outside: ``uvicorn --factory tests.server.faulty_app:create``.
"""

from __future__ import annotations

from fastapi import FastAPI

from server.main import create_app

SECRET = "secret-internal-detail-/etc/sam3"


def create() -> FastAPI:
    app = create_app()

    @app.get("/test/bug")
    async def bug() -> dict:
        raise RuntimeError(f"a bug whose message must stay in the log: {SECRET}")

    @app.post("/test/bug-after-body")
    async def bug_after_body(body: dict) -> dict:
        return {"ratio": len(body) / 0}  # ZeroDivisionError after the JSON body was read

    return app
