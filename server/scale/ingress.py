"""The HTTP entry of the Ray Serve application: reads each request's affinity key, forwards the request to
the model deployment through its handle (the :class:`~server.scale.router.AffinityRouter` picks the
replica), and streams the answer back unchanged.

Why a thin ingress in front of the app: Ray Serve's HTTP proxy chooses a replica before the body is read,
and the keys live in the bodies the Milimo clients send (``session_id`` in JSON, ``image_id`` in a form), so
one small deployment reads them. Everything the client sees (routes, statuses, headers, streamed lines,
errors) is the app's own answer from a model replica, plus ``X-Replica``. The ingress answers by itself only
when no replica can: a session lost with its replica (410 ``session_id: ...``), and a request whose replica
died before answering (503 with ``Retry-After``, which the clients retry; a session request gets the 410). A
streamed propagation whose replica dies ends with the error line ``{"event": "error", "status": 410, ...}``.

The pin table is per ingress replica. A session it does not know (the ingress restarted; another ingress
replica started it) is looked for on every running replica before the request goes by load; only the 410 of
a session lost with its replica needs the ingress replica that knew it (another one answers 404).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re

from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from server.scale.affinity import IMAGE_PATHS, TABLE, Route, routing_key
from server.scale.edge import REPLICA_KEY, error_app, lost_session_detail, replica_name, stamp_replica, wire_scope
from server.settings import Settings

log = logging.getLogger("sam3.server")

# Room for the multipart framing around the largest upload (the app's own limits decide; see server.main).
_BODY_OVERHEAD_BYTES = 1024 * 1024
_IMAGE_ID_IN_JSON = re.compile(rb'"image_id":\s*"([^"\\]+)"')
_NDJSON = b"application/x-ndjson"
_FIND_TIMEOUT_S = 5.0


def _header(headers, name: bytes) -> bytes | None:
    for key, value in headers or ():
        if key.lower() == name:
            return value
    return None


async def _result(response):
    return await response


def _without_request_id(message: dict) -> dict:
    """Ray Serve's proxy puts ``X-Request-ID`` on every answer (the id the app saw in the request): the app's
    own copy is dropped so the header appears once."""
    message["headers"] = [(k, v) for k, v in message.get("headers") or () if k.lower() != b"x-request-id"]
    return message


class _Forward:
    """The state of one forwarded request: which answer parts are held back until a key is pinned."""

    def __init__(self, path: str, route: Route):
        self.path = path
        self.route = route
        self.replica: str | None = route.replica
        self.start: dict | None = None
        self.held: list[dict] = []
        self.hold = False
        self.sent_start = False
        self.streaming = False

    def on_start(self, message: dict) -> None:
        self.replica = message.pop(REPLICA_KEY, None) or self.replica
        status = message["status"]
        headers = message.get("headers") or ()
        self.streaming = (_header(headers, b"content-type") or b"").startswith(_NDJSON)
        if status != 200 or self.replica is None:
            return
        if self.path == "/track/stop" and self.route.value is not None:
            TABLE.unpin("session", self.route.value)
        elif self.path == "/track/start":
            self.hold = True  # the new session id is in the body
        elif self.path in IMAGE_PATHS:
            image_id = _header(headers, b"x-image-id")
            if image_id is not None:
                TABLE.pin("image", image_id.decode("latin-1"), self.replica)
            elif (_header(headers, b"content-type") or b"").startswith(b"application/json"):
                self.hold = True  # the image_id is a field of the JSON answer

    def on_complete_body(self, body: bytes) -> None:
        """The whole held answer is in: pin the key it names."""
        if self.path == "/track/start":
            try:
                session_id = json.loads(body).get("session_id")
            except (ValueError, AttributeError):
                session_id = None
            if isinstance(session_id, str):
                TABLE.pin("session", session_id, self.replica)
        else:
            found = _IMAGE_ID_IN_JSON.search(body)
            if found is not None:
                TABLE.pin("image", found.group(1).decode(), self.replica)


class Ingress:
    """The forwarding logic (a plain class: the deployment below only holds one)."""

    def __init__(self, replicas: DeploymentHandle, name: str) -> None:
        self.forward = replicas.options(method_name="forward", stream=True)
        self.holds = replicas.options(method_name="holds")
        self.settings = Settings()
        self.body_limit = max(self.settings.max_upload_bytes + _BODY_OVERHEAD_BYTES, self.settings.max_json_bytes)
        self.name = name

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return  # no websockets in this service
        body = await self._read_body(scope, receive)
        if body is None:
            return  # the client left before sending its request
        path = scope["path"]
        root = scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        content_type = (_header(scope.get("headers"), b"content-type") or b"").decode("latin-1")
        route = TABLE.route(routing_key(scope["method"], path, content_type, body))
        if route.session_id is not None and route.replica is None:
            lost_with = TABLE.lost_with(route.session_id)
            if lost_with is not None:
                await self._answer(scope, receive, send, 410, lost_session_detail(route.session_id, lost_with))
                return
            holder = await self._find_session(route.session_id)
            if holder is not None:
                TABLE.pin("session", route.session_id, holder)
                route = Route("session", route.session_id, holder)
        await self._relay(scope, receive, send, body, path, route)

    async def _find_session(self, session_id: str) -> str | None:
        """Ask the replicas, one after the other, whether one holds a session this table does not know (this
        ingress restarted, or another ingress replica started it). Bounded: a replica that does not answer
        within ``_FIND_TIMEOUT_S`` counts as not holding it (the request then goes by load, and a replica
        that does not hold the session answers 404)."""
        if not TABLE.running:  # the router starts with a first call (to any replica); then it knows them all
            holder = await self._ask(session_id, Route())
            if holder is not None:
                return holder
        for uid in sorted(TABLE.running):
            holder = await self._ask(session_id, Route(replica=uid))
            if holder is not None:
                return holder
        return None

    async def _ask(self, session_id: str, route: Route) -> str | None:
        try:
            return await asyncio.wait_for(_result(self.holds.remote(session_id, route=route)), _FIND_TIMEOUT_S)
        except (asyncio.TimeoutError, RayActorError):
            return None

    async def _read_body(self, scope, receive) -> bytes | None:
        """The whole body, or its first ``body_limit + 1`` bytes (the app then answers 413 on its own)."""
        declared = _header(scope.get("headers"), b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.body_limit:
            return b""  # the app refuses a declared length over its limit before reading a byte
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self.body_limit or not message.get("more_body", False):
                return b"".join(chunks)

    async def _answer(self, scope, receive, send, status: int, detail: str, headers=None) -> None:
        async def stamped(message):
            if message["type"] == "http.response.start":
                stamp_replica(_without_request_id(message), self.name)
            await send(message)

        await error_app(self.settings, status, detail, headers)(scope, receive, stamped)

    async def _relay(self, scope, receive, send, body: bytes, path: str, route: Route) -> None:
        state = _Forward(path, route)
        stream = self.forward.remote(wire_scope(scope), body, route=route)
        done = False
        try:
            async for message in stream:
                if message["type"] == "http.response.start":
                    state.on_start(_without_request_id(message))
                    if state.hold:
                        state.start = message
                        continue
                    state.sent_start = True
                    await send(message)
                elif state.hold:
                    state.held.append(message)
                    if not message.get("more_body", False):
                        state.on_complete_body(b"".join(m.get("body", b"") for m in state.held))
                        state.sent_start = True
                        await send(state.start)
                        for held in state.held:
                            await send(held)
                else:
                    await send(message)
            done = True
        except RayActorError as exc:  # the replica died (killed, out of memory) or cannot be reached
            done = True
            await self._replica_lost(scope, receive, send, state, exc)
        finally:
            if not done:
                stream.cancel()  # the client left (or a bug): stop the replica's work too

    async def _replica_lost(self, scope, receive, send, state: _Forward, exc: Exception) -> None:
        replica = state.replica or "the replica"
        log.warning("replica %s lost while serving %s: %s", replica, state.path, type(exc).__name__)
        if state.replica is not None:
            TABLE.replica_gone(state.replica)
        session_id = state.route.session_id
        if not state.sent_start:
            if session_id is not None:
                await self._answer(scope, receive, send, 410, lost_session_detail(session_id, replica))
            else:
                detail = f"service: the replica serving this request ({replica}) stopped; send it again"
                await self._answer(scope, receive, send, 503, detail, {"Retry-After": "1"})
            return
        if state.streaming:
            detail = lost_session_detail(session_id or "", replica)
            line = {"event": "error", "status": 410, "detail": detail}
            await send({"type": "http.response.body", "body": (json.dumps(line) + "\n").encode(), "more_body": False})
            return
        raise exc  # a plain answer cut short: the server drops the connection


@serve.deployment(name="SamIngress", max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class SamIngress:
    """The application's HTTP entry (see the module docstring); ``replicas`` is the model deployment."""

    def __init__(self, replicas: DeploymentHandle) -> None:
        replica_id = serve.get_replica_context().replica_id
        self.ingress = Ingress(replicas, replica_name(replica_id.deployment_id.name, replica_id.unique_id))

    def __serve_build_asgi_app__(self):
        return self.ingress
