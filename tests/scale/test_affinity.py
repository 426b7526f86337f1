"""The affinity rules without Ray: which key a request names (from the bodies the clients really send), and
what the pin table answers as replicas come and go."""

from __future__ import annotations

import json

import httpx

from server.scale.affinity import AffinityTable, Route, RouteKey, routing_key


def _encoded(request: httpx.Request) -> tuple[str, bytes]:
    return request.headers.get("content-type", ""), request.read()


def key_of(method: str, path: str, **kwargs) -> RouteKey | None:
    request = httpx.Request(method, f"http://sam{path}", **kwargs)
    content_type, body = _encoded(request)
    return routing_key(method, path, content_type, body)


def test_track_calls_are_keyed_by_their_json_session_id():
    for path in ("/track/prompt", "/track/propagate", "/track/cancel", "/track/frames", "/track/stop"):
        assert key_of("POST", path, json={"session_id": "abc", "frame_idx": 0}) == RouteKey("session", "abc")
    assert key_of("POST", "/track/start", json={"video_path": "v.mp4"}) == RouteKey("start", None)
    assert key_of("POST", "/track/start", json={"video_path": "v.mp4", "session_id": "mine"}) == RouteKey(
        "start", "mine"
    )
    # no usable id: any replica answers (with the app's own 400/422)
    assert key_of("POST", "/track/prompt", content=b"{not json") is None
    assert key_of("POST", "/track/prompt", json={"session_id": 7}) is None
    assert key_of("POST", "/track/prompt", json=[1, 2]) is None
    assert key_of("GET", "/track/sessions") is None


def test_image_routes_are_keyed_by_the_image_id_form_field():
    multipart = key_of("POST", "/detect", data={"image_id": "f00d", "text": "cat"}, files={"x": ("x", b"1")})
    assert multipart == RouteKey("image", "f00d")
    assert key_of("POST", "/predict/mask", data={"image_id": " f00d ", "points": "[[1, 2]]"}) == RouteKey(
        "image", "f00d"
    )
    upload = key_of("POST", "/detect", data={"text": "cat"}, files={"image": ("a.png", b"\x89PNG" + b"0" * 100)})
    assert upload is None
    # an upload whose bytes happen to contain the field name is not mistaken for one
    tricky = key_of("POST", "/detect", files={"image": ("a.png", b'name="image_id"\r\n\r\nnope')})
    assert tricky is None
    assert key_of("POST", "/media/upload", data={"image_id": "f00d"}) is None
    assert key_of("GET", "/health") is None


def test_the_table_pins_unpins_and_loses_with_a_replica():
    table = AffinityTable()
    table.pin("session", "s1", "r1")
    table.pin("session", "s2", "r2")
    table.pin("image", "i1", "r1")
    assert table.route(RouteKey("session", "s1")) == Route("session", "s1", "r1")
    assert table.route(RouteKey("image", "i1")) == Route("image", "i1", "r1")
    assert table.route(RouteKey("start", "s2")) == Route("start", "s2", "r2")  # a taken id: its holder says 409
    assert table.route(RouteKey("start", None)) == Route("start", None, None)
    assert table.route(None) == Route()
    assert table.sessions_per_replica() == {"r1": 1, "r2": 1}

    assert table.replicas_running({"r2"}) == ["s1"]
    assert table.lost_with("s1") == "r1" and table.where("session", "s1") is None
    assert table.where("image", "i1") is None  # features are gone: the replica that gets it answers 404
    assert table.lost_with("s2") is None and table.where("session", "s2") == "r2"

    table.pin("session", "s1", "r2")  # started again under the same id
    assert table.lost_with("s1") is None
    table.unpin("session", "s2")
    assert table.where("session", "s2") is None


def test_the_table_is_bounded():
    table = AffinityTable(max_keys=3)
    for i in range(5):
        table.pin("image", str(i), "r1")
    assert [table.where("image", str(i)) for i in range(5)] == [None, None, "r1", "r1", "r1"]


def test_route_names_the_session_only_for_session_calls():
    assert Route("session", "s", "r").session_id == "s"
    assert Route("start", "s", "r").session_id is None
    assert json.dumps(Route().__dict__)  # plain values: it travels to the replica with the request
