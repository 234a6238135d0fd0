"""The web page: a handful of HTML pages at `/`, each the same shell naming its page, and the JavaScript
modules and CSS under STATIC_PREFIX, all from this package (no CDN: the page works offline).

The pages are plain Starlette routes, outside FastAPI's schema and outside the API's unknown-query check:
a permalink carries the page's own query (`/?model=...&seed=...`), read by the browser, not the server.
Every page answers with a Content-Security-Policy that lets it talk to this origin only, so a mistake
that would load something from elsewhere fails in the browser (and in tests/browser) instead of leaking.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

STATIC_PREFIX = "/static/web"
WEB_DIR = Path(__file__).resolve().parent
# Path -> (page name the script dispatches on, heading).
PAGES: dict[str, tuple[str, str]] = {
    "/": ("generate", "Generate"),
    "/mix": ("mix", "Style mixing"),
    "/walk": ("walk", "Latent walk"),
    "/project": ("project", "Projection"),
    "/train": ("train", "Train"),
    "/train/{job_id}": ("job", "Training job"),
    "/library": ("library", "Library"),
}
# blob: because images and videos are fetched with the API key and shown (and read back) from object URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; connect-src 'self' blob:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def render_page(template: str, page: str, title: str, root: str) -> str:
    return (
        template.replace("{root}", html.escape(root, quote=True))
        .replace("{page}", page)
        .replace("{title}", html.escape(title))
    )


def install_web(app: FastAPI) -> None:
    """Mount the assets and add the pages (after the API's routes, which keep their paths)."""
    template = (WEB_DIR / "page.html").read_text(encoding="utf-8")
    app.mount(STATIC_PREFIX, StaticFiles(directory=WEB_DIR / "static"), name="web-static")

    for path, (page, title) in PAGES.items():

        async def endpoint(request: Request, page: str = page, title: str = title) -> HTMLResponse:
            # Behind a proxy that strips a path prefix, links and assets must carry it.
            root = str(request.scope.get("root_path", "")).rstrip("/")
            return HTMLResponse(
                render_page(template, page, title, root),
                headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
            )

        app.add_route(path, endpoint, methods=["GET"], include_in_schema=False)
