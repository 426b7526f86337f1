"""The one launcher of real uvicorn processes (tests/live_server.py): a port taken between ``free_port()`` and
uvicorn's bind (another run on the machine) costs a retry on a new port, not a module of errored tests."""

from __future__ import annotations

import socket

import httpx

import tests.live_server as live


def test_a_taken_port_is_retried_on_another(tmp_path, monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    handed, really_free = [], live.free_port

    def free_port() -> int:  # the first port handed out is the one another process holds
        handed.append(taken.getsockname()[1] if not handed else really_free())
        return handed[-1]

    monkeypatch.setattr(live, "free_port", free_port)
    server = live.start_server(tmp_path, {}, wait_for_model=False)
    try:
        assert len(handed) == 2 and server.url.endswith(f":{handed[1]}") and handed[1] != handed[0]
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    finally:
        live.stop_server(server)
        taken.close()
