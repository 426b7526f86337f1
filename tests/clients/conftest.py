"""A real service: ``uvicorn server.main:app`` in a subprocess on a free 127.0.0.1 port (tiny preset,
random weights), shared by the client tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.live_server import REPO, LiveServer, free_port, start_server, stop_server

__all__ = ["REPO", "LiveServer", "free_port", "start_server", "stop_server"]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("live"), {})
    health = httpx.get(f"{server.url}/health").json()
    assert health["model_loaded"], f"model failed to load: {health['error']}\n{server.log()}"
    yield server
    stop_server(server)
