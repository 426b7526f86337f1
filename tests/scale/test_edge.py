"""The replica-side pieces without Ray: the real app run message by message through ``run_asgi`` (as a
replica runs it), with its lifespan driven by ``Lifespan``, ``X-Replica`` stamped, and the 410 answer."""

from __future__ import annotations

import asyncio
import json

from server.main import create_app
from server.scale.edge import REPLICA_HEADER, Lifespan, error_app, run_asgi, stamp_replica, wire_scope
from tests.server.conftest import tiny_settings


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers or [(b"host", b"sam"), (b"origin", b"http://page")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8001),
    }


async def collect(app, request: dict, body: bytes = b"") -> tuple[dict, bytes]:
    start, chunks = None, []
    async for message in run_asgi(app, request, body):
        if message["type"] == "http.response.start":
            stamp_replica(message, "SamReplica#abc")
            start = message
        else:
            chunks.append(message.get("body", b""))
    return start, b"".join(chunks)


def headers_of(start: dict) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in start["headers"]}


def test_the_app_runs_through_run_asgi_with_its_lifespan(tmp_path):
    app = create_app(tiny_settings(media_roots=str(tmp_path)))

    async def main():
        lifespan = Lifespan(app)
        await lifespan.start()
        assert lifespan.running
        try:
            health = await collect(app, wire_scope(scope("GET", "/health")))
            body = json.dumps({"session_id": "nobody"}).encode()
            json_headers = [(b"content-type", b"application/json"), (b"origin", b"http://page")]
            missing = await collect(app, wire_scope(scope("POST", "/track/frames", json_headers)), body)
        finally:
            await lifespan.stop()
        assert not lifespan.running
        return health, missing

    (start, body), (missing_start, missing_body) = asyncio.run(main())
    assert start["status"] == 200 and json.loads(body)["model_loaded"] is True
    headers = headers_of(start)
    assert headers["x-replica"] == "SamReplica#abc" and headers["x-request-id"]
    assert REPLICA_HEADER in headers["access-control-expose-headers"]
    assert missing_start["status"] == 404 and json.loads(missing_body)["detail"].startswith("session_id: ")


def test_the_lost_session_answer_has_the_apps_edge():
    app = error_app(tiny_settings(), 410, "session_id: gone")
    start, body = asyncio.run(collect(app, scope("POST", "/track/prompt")))
    headers = headers_of(start)
    assert start["status"] == 410 and json.loads(body) == {"detail": "session_id: gone"}
    assert headers["x-request-id"] and headers["access-control-allow-origin"] == "*"
    assert headers["x-replica"] == "SamReplica#abc"


def test_a_consumer_that_leaves_stops_the_app():
    ended = asyncio.Event()

    async def endless(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
                await asyncio.sleep(0.01)
        finally:
            ended.set()

    async def main():
        stream = run_asgi(endless, scope("GET", "/"), b"")
        async for message in stream:
            if message["type"] == "http.response.body":
                break
        await stream.aclose()
        await asyncio.wait_for(ended.wait(), 5)

    asyncio.run(main())
