"""/docs and /redoc work with no internet: the pages name no external URL and their assets come from us."""

from __future__ import annotations

import re

import pytest

URL = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_only_local_assets(client, page):
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert URL.findall(html) == []  # no CDN, no fonts, no validator badge
    assets = re.findall(r"""(?:src|href)="(/[^"]+)\"""", html)
    assert any(a.endswith(".js") for a in assets), assets
    for asset in assets:
        got = client.get(asset)
        assert got.status_code == 200 and len(got.content) > 1000, asset
    assert client.get("/openapi.json").status_code == 200


def test_swagger_ui_renders_openapi_3_1(client):
    """FastAPI writes OpenAPI 3.1, which Swagger UI renders from version 5 on (4.x shows an error instead)."""
    js = client.get("/docs-assets/swagger-ui-bundle.js").text
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert "isOAS31" in js  # the OpenAPI 3.1 support of Swagger UI 5


def test_redoc_bundle_names_no_cdn_logo(client):
    """ReDoc's "API docs by Redocly" logo came from cdn.redoc.ly; /redoc's copy of the bundle shows an inline one."""
    html = client.get("/redoc").text
    (bundle,) = re.findall(r'src="(/[^"]+redoc[^"]*\.js)"', html)
    js = client.get(bundle).text
    assert "cdn.redoc.ly" not in js and "data:image/svg+xml" in js
