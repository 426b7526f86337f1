"""Concurrent requests: serialised on the model, the image features computed once and shared."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.server.media import decode_mask, encode, never_seen


def test_16_concurrent_clicks_on_one_image_run_the_backbone_once(client, coffee):
    image = encode(never_seen(coffee), "PNG")
    before = client.get("/health").json()["backbone_runs"]

    def click(i: int):
        return client.post(
            "/predict/mask",
            files={"image": ("c.png", image, "image/png")},
            data={"points": f"[[{20 + 30 * i}, {15 + 20 * i}]]"},
        )

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(click, range(16)))
    assert [r.status_code for r in responses] == [200] * 16, [r.text for r in responses if r.status_code != 200]
    assert all(decode_mask(r.content).shape == (400, 600) for r in responses)
    assert client.get("/health").json()["backbone_runs"] == before + 1
