"""/docs works offline: Swagger UI comes from keyservice itself, under a strict policy."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx
from fastapi import FastAPI


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = ""
        self.openapi_url: str | None = None
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(str(values[name]))
        if tag == "script":
            self.scripts.append(values)
            self._in_script = True
        if "data-openapi-url" in values:
            self.openapi_url = values["data-openapi-url"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_script += data.strip()


EXPECTED_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}


async def test_docs_load_only_their_own_assets(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = _Page()
    page.feed(response.text)

    # Nothing from another host, and no script in the page itself.
    assert page.urls
    assert all(url.startswith("/") and not url.startswith("//") for url in page.urls), page.urls
    assert page.inline_script == ""
    assert all(script.get("src") for script in page.scripts)
    assert [s["src"] for s in page.scripts] == [
        "/static/swagger-ui/swagger-ui-bundle.js",
        "/static/docs.js",
    ]

    for url in page.urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert asset.headers["content-type"] == EXPECTED_TYPES[suffix], url
        assert asset.headers["x-content-type-options"] == "nosniff"
    bundle = await client.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in bundle.text
    starter = await client.get("/static/docs.js")
    assert "SwaggerUIBundle(" in starter.text
    assert "openapiUrl" in starter.text

    assert page.openapi_url == "/openapi.json"
    document = await client.get(page.openapi_url)
    assert document.json()["info"]["title"] == "keyservice"


async def test_docs_are_sent_with_a_strict_content_security_policy(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/docs")
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in response.headers["content-security-policy"].split(";")
    }
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "data:"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "unsafe" not in response.headers["content-security-policy"]


async def test_only_the_pages_assets_are_served(client: httpx.AsyncClient) -> None:
    for path in (
        "/redoc",
        "/docs/oauth2-redirect",
        "/static/swagger-ui/LICENSE",
        "/static/swagger-ui/README.md",
        "/static/swagger-ui/",
        "/static/../config.py",
        "/static/%2e%2e/config.py",
        "/static/swagger-ui/swagger-ui-bundle.js.map",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json", path


async def test_docs_behind_a_path_prefix(app: FastAPI) -> None:
    # `uvicorn --root-path /keys` behind a proxy that serves keyservice under /keys.
    transport = httpx.ASGITransport(app=app, root_path="/keys")
    async with httpx.AsyncClient(transport=transport, base_url="http://keyservice.test") as client:
        page = _Page()
        page.feed((await client.get("/keys/docs")).text)
        assert page.openapi_url == "/keys/openapi.json"
        for url in page.urls:
            assert url.startswith("/keys/static/"), url
            assert (await client.get(url)).status_code == 200, url
