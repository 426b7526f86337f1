"""A real uvicorn process serving an app of this repository, for the tests of the HTTP edge.

These tests also serve the real app with one extra route that fails on purpose (``tests.server.faulty_app``),
through ``tests.clients.conftest.start_server``, which takes the uvicorn target.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.live_server import LiveServer, rss_mb, start_server, stop_server

REPO = Path(__file__).resolve().parents[2]

__all__ = ["LiveServer", "start_app", "stop_server", "rss_mb"]


def start_app(
    tmp: Path, extra_env: dict[str, str], target: str = "server.main:app", factory: bool = False, timeout_s: float = 180
) -> LiveServer:
    """Start ``uvicorn <target>`` with ``start_server`` and wait until its model has loaded.

    ``factory``: ``target`` names a function that builds the app (uvicorn ``--factory``)."""
    # the service's own session cap (start_server's default of 2 suits the client tests only)
    env = {"SAM_MAX_SESSIONS": "4", **extra_env}
    server = start_server(tmp, env, timeout_s=timeout_s, target=target, factory=factory)
    health = httpx.get(f"{server.url}/health", timeout=5).json()
    assert health["model_loaded"], health
    return server
