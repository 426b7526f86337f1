"""Session and image affinity: which replica a request must reach, and the table of who holds what.

A video session lives in one replica's memory, and so do an image's features. The ingress reads the routing
key of each request (:func:`routing_key`: the JSON ``session_id`` of ``/track/*``, the form field ``image_id``
of the image routes), looks it up in the :class:`AffinityTable` and hands a :class:`Route` to the Ray Serve
request router (:mod:`server.scale.router`), which sends the request to that replica only. Keys are pinned
from the answers: a 200 of ``/track/start`` pins its ``session_id``, an image answer pins its ``image_id``,
``/track/stop`` unpins.

When a replica leaves the running set (killed, out of memory, scaled down), its sessions are marked lost:
their next call answers 410 ``session_id: ...`` at once (the client starts again), while its image ids are
simply forgotten (the next ``image_id`` request answers 404 ``image_id: ...``, and the client sends the image
again, as the contract says). The table is plain Python (no Ray import): the ingress and the router share the
module-level :data:`TABLE` of their process.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs

Kind = Literal["session", "image", "start"]

# The image routes that accept ``image_id`` (their multipart form is searched for the field).
IMAGE_PATHS = frozenset({"/predict/mask", "/detect", "/segment/text", "/segment/everything"})
# Routes under /track/ that do not name one session.
UNKEYED_TRACK_PATHS = frozenset({"/track/sessions"})
# An image_id form field only comes without an upload: a larger body is not searched.
_MAX_FORM_SCAN_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RouteKey:
    """What a request names: a session (``/track/*``), an image id, or a new session (``/track/start``, with
    the caller's ``session_id`` when it chose one)."""

    kind: Kind
    value: str | None


@dataclass(frozen=True)
class Route:
    """Routing instructions handed to the request router with the request (and on to the replica).

    ``replica`` is the unique id of the replica that must serve it (None: any, chosen by load). A session
    request pinned to a replica that is gone reaches another one, which answers 410 because ``replica`` is
    not its own: the request never waits for a replica that will not come back.
    """

    kind: Kind | None = None
    value: str | None = None
    replica: str | None = None

    @property
    def session_id(self) -> str | None:
        return self.value if self.kind == "session" else None


def _json_session_id(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    value = data.get("session_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _form_field(body: bytes, content_type: str, name: str) -> str | None:
    """The value of a small text field of a multipart body (None when absent or unreadable)."""
    if len(body) > _MAX_FORM_SCAN_BYTES or f'name="{name}"'.encode() not in body:
        return None
    from email.parser import BytesParser
    from email.policy import HTTP

    try:
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
    except Exception:  # noqa: BLE001 -- a malformed form is the app's to refuse (400)
        return None
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == name and part.get_filename() is None:
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                value = payload.decode("utf-8", "replace").strip()
                return value or None
    return None


def routing_key(method: str, path: str, content_type: str, body: bytes) -> RouteKey | None:
    """The affinity key of a request, or None when any replica may serve it (health, uploads, pages)."""
    if method != "POST":
        return None
    if path == "/track/start":
        return RouteKey("start", _json_session_id(body))
    if path.startswith("/track/") and path not in UNKEYED_TRACK_PATHS:
        session_id = _json_session_id(body)
        return RouteKey("session", session_id) if session_id is not None else None
    if path in IMAGE_PATHS:
        kind = content_type.split(";", 1)[0].strip().lower()
        if kind == "multipart/form-data":
            image_id = _form_field(body, content_type, "image_id")
        elif kind == "application/x-www-form-urlencoded" and len(body) <= _MAX_FORM_SCAN_BYTES:
            values = parse_qs(body.decode("latin-1")).get("image_id") or [""]
            image_id = values[0].strip() or None
        else:
            image_id = None
        return RouteKey("image", image_id) if image_id is not None else None
    return None


class AffinityTable:
    """Which replica (by Ray Serve's unique replica id) holds which session and image id.

    Bounded (least recently used keys go first); safe to call from the router's and the ingress's threads.
    """

    def __init__(self, max_keys: int = 200_000):
        self.max_keys = max_keys
        self._pins: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lost: OrderedDict[str, str] = OrderedDict()  # session id -> the replica it was lost with
        self._lock = threading.Lock()
        self.running: frozenset[str] = frozenset()  # the replicas the router last saw running

    def pin(self, kind: Literal["session", "image"], value: str, replica: str) -> None:
        with self._lock:
            key = (kind, value)
            self._pins[key] = replica
            self._pins.move_to_end(key)
            if kind == "session":
                self._lost.pop(value, None)
            while len(self._pins) > self.max_keys:
                self._pins.popitem(last=False)

    def unpin(self, kind: Literal["session", "image"], value: str) -> None:
        with self._lock:
            self._pins.pop((kind, value), None)
            if kind == "session":
                self._lost.pop(value, None)

    def where(self, kind: Literal["session", "image"], value: str) -> str | None:
        """The replica holding that key, or None when it is not pinned (anywhere: routed by load)."""
        with self._lock:
            replica = self._pins.get((kind, value))
            if replica is not None:
                self._pins.move_to_end((kind, value))
            return replica

    def lost_with(self, session_id: str) -> str | None:
        """The replica a session was lost with (it stopped while holding it), or None."""
        with self._lock:
            return self._lost.get(session_id)

    def replica_gone(self, replica: str) -> list[str]:
        """Forget what ``replica`` held: its sessions become lost (410), its image ids unknown (404)."""
        with self._lock:
            gone = [key for key, holder in self._pins.items() if holder == replica]
            sessions = []
            for kind, value in gone:
                del self._pins[(kind, value)]
                if kind == "session":
                    sessions.append(value)
                    self._lost[value] = replica
            while len(self._lost) > self.max_keys:
                self._lost.popitem(last=False)
            return sessions

    def replicas_running(self, running: set[str]) -> list[str]:
        """The running set changed: every replica holding keys that is not in it is gone."""
        self.running = frozenset(running)
        with self._lock:
            holders = set(self._pins.values())
        lost: list[str] = []
        for replica in holders - running:
            lost += self.replica_gone(replica)
        return lost

    def sessions_per_replica(self) -> Counter[str]:
        with self._lock:
            return Counter(holder for (kind, _), holder in self._pins.items() if kind == "session")

    def route(self, key: RouteKey | None) -> Route:
        """The :class:`Route` for a request with this key (pinned where the key is known)."""
        if key is None:
            return Route()
        if key.kind == "start":
            # a taken custom id goes to its holder, which answers 409; a new one is placed by load
            holder = self.where("session", key.value) if key.value is not None else None
            return Route("start", key.value, holder)
        return Route(key.kind, key.value, self.where(key.kind, key.value))


TABLE = AffinityTable()
"""The table of this process (the ingress replica), shared by the ingress and its request router."""
