"""`/docs` and `/redoc` render with no internet: every script, stylesheet, icon and image they name, and
the schema they load, is served by the app itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient


class _Urls(HTMLParser):
    """The URLs a browser would fetch while loading the page."""

    FETCHED = {("script", "src"), ("link", "href"), ("img", "src"), ("redoc", "spec-url")}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if (tag, name) in self.FETCHED and value:
                self.urls.append(value)


def _fetched_urls(html: str) -> list[str]:
    parser = _Urls()
    parser.feed(html)
    # Swagger UI is told where the schema is in its inline script (`url: '/openapi.json'`).
    parser.urls += re.findall(r"\burl:\s*'([^']+)'", html)
    return parser.urls


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png", "openapi.json"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png", "openapi.json"}),
    ],
)
def test_docs_pages_load_only_what_the_app_serves(client: TestClient, page: str, expected: set[str]) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = _fetched_urls(response.text)
    assert {u.rsplit("/", 1)[-1] for u in urls} >= expected, urls
    # No absolute URL anywhere in the page: no CDN, no Google Fonts, no online validator.
    assert re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", response.text) == []
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from another host"
        asset = client.get(url)
        assert asset.status_code == 200, f"{page} names {url}, which answers {asset.status_code}"
        assert len(asset.content) > 0


def test_assets_are_the_real_bundles(client: TestClient) -> None:
    js = client.get("/static/docs/swagger-ui-bundle.js")
    assert js.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    assert b"SwaggerUIBundle" in js.content and len(js.content) > 500_000
    css = client.get("/static/docs/swagger-ui.css")
    assert css.headers["content-type"].startswith("text/css") and b".swagger-ui" in css.content
    redoc = client.get("/static/docs/redoc.standalone.js")
    assert b"Redoc" in redoc.content and len(redoc.content) > 500_000
    assert client.get("/static/docs/nothing.js").status_code == 404
