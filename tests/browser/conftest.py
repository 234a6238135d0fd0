"""A real service and a real browser for the web page's tests.

One `stylegan serve` on the embedded default (SQLite, the embedded Redis, local storage, its own two
workers) serves every test here, as a person would run it; Debian's chromium, driven by Playwright's
Python package (`executable_path`, no `playwright install`), loads the pages. Each test's browser
context refuses every request that would leave this machine and records it, and records every console
error and uncaught exception; the test fails on either. Screenshots go to tests/browser/screenshots/
(git-ignored) for people to look at.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Route,
    sync_playwright,
)

from tests.api.inference_service import FIXTURES
from tests.api.test_serve import Serve

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
LAPTOP = {"width": 1366, "height": 800}
PHONE = {"width": 390, "height": 844}
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Rendering on 2 shared CPU cores, with other test runs beside: generous, but a hang still fails.
TIMEOUT_MS = 60_000


# A catalogue of one official network, served from this machine: the tests run offline, so the Library
# page's catalogue import downloads a fixture pickle in NVIDIA's format from a local mirror instead.
MIRRORED = FIXTURES / "sg2ada_uncond_32"
CATALOG_ENTRY = "mirror-sg2ada-uncond-32"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def catalog_mirror() -> Iterator[Path]:
    """A catalogue file whose one entry is downloaded from a local HTTP server."""
    handler = functools.partial(QuietHandler, directory=str(MIRRORED))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    network = MIRRORED / "network.pkl"
    entry = {
        "name": CATALOG_ENTRY,
        "architecture": "stylegan2",
        "resolution": 32,
        "url": f"http://127.0.0.1:{server.server_address[1]}/network.pkl",
        "sha256": hashlib.sha256(network.read_bytes()).hexdigest(),
        "description": "a StyleGAN2-ADA pickle in NVIDIA's format (random weights), from a local mirror",
        "license": "NVIDIA Source Code License-NC",
        "license_url": None,
        "commercial_use": False,
        "listed_in": None,
    }
    root = Path(tempfile.mkdtemp(prefix="stylegan-catalog-"))
    (root / "catalog.json").write_text(json.dumps({"comment": "browser tests", "entries": [entry]}))
    try:
        yield root / "catalog.json"
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def service(catalog_mirror: Path) -> Iterator[Serve]:
    root = Path(tempfile.mkdtemp(prefix="stylegan-browser-"))
    log = root / "serve.log"
    env = {
        # The projector's stand-in distance: NVIDIA's VGG16 file is a download, and the tests run offline.
        "STYLEGAN_PROJECTION_DISTANCE": "simple",
        "STYLEGAN_CATALOG_FILE": str(catalog_mirror),
        "STYLEGAN_ALLOW_PRIVATE_URLS": "true",  # the mirror is on loopback
    }
    serve = Serve(root / "data", log, env=env)
    try:
        serve.http.timeout = httpx.Timeout(60.0)
        serve.wait_ready()
        yield serve
    finally:
        serve.stop()
        if serve.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(serve.process.pid, signal.SIGKILL)
        Serve.started.remove(serve)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `apt-get install chromium` (scripts/test.sh does)", pytrace=False
        )
    # --no-sandbox: the tests run as root here and in CI, where Chromium's sandbox refuses to start.
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
    try:
        yield chromium
    finally:
        chromium.close()


@dataclass
class Watched:
    """A page whose outside requests and console errors are recorded (and checked at teardown)."""

    page: Page
    context: BrowserContext
    base: str
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Console errors a test provokes on purpose (a refused request logs one), as substrings.
    allowed: list[str] = field(default_factory=list)

    def goto(self, path: str) -> None:
        self.page.goto(self.base + path)
        self.page.wait_for_selector("html[data-ready=true]", timeout=TIMEOUT_MS)

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in self.allowed)]

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def shown_png(self, selector: str) -> np.ndarray:
        """The pixels of the image the page shows (its blob: URL read back in the page)."""
        encoded = self.page.eval_on_selector(
            selector,
            """async (img) => {
                const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
                let text = "";
                for (const b of bytes) text += String.fromCharCode(b);
                return btoa(text);
            }""",
        )
        return png_pixels(base64.b64decode(encoded))


def png_pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def open_page(browser: Browser, service: Serve, viewport: dict[str, int]) -> Watched:
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    watched = Watched(page=context.new_page(), context=context, base=service.base)

    def guard(route: Route) -> None:
        parts = urlsplit(route.request.url)
        if parts.scheme in {"http", "https", "ws", "wss"} and parts.hostname not in LOOPBACK:
            watched.outside.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.errors.append(f"{message.text} ({message.location.get('url', '')})")

    context.route("**/*", guard)
    watched.page.on("console", console)
    watched.page.on("pageerror", lambda error: watched.errors.append(f"uncaught: {error}"))
    return watched


def check_clean(watched: Watched) -> None:
    assert not watched.outside, f"the page asked for something outside this machine: {watched.outside}"
    assert not watched.unexpected_errors(), f"console errors: {watched.unexpected_errors()}"


@pytest.fixture
def laptop(browser: Browser, service: Serve) -> Iterator[Watched]:
    watched = open_page(browser, service, LAPTOP)
    try:
        yield watched
        check_clean(watched)
    finally:
        watched.context.close()


@pytest.fixture
def demo(service: Serve) -> dict[str, Any]:
    models = service.http.get("/v1/models").json()["items"]
    found = [m for m in models if m["demo"]]
    assert found, f"no demo model listed: {models}"
    model: dict[str, Any] = found[0]
    return model
