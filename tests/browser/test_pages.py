"""The web page in a real headless Chromium against a real `stylegan serve`: every page loads offline
and clean, Generate shows the API's pixels and follows its sliders, the mixing grid fills, a walk's video
plays, an API error reaches the person in words, and the API-key field appears when keys are on."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, expect

from tests.api.test_serve import Serve
from tests.browser.conftest import LAPTOP, PHONE, TIMEOUT_MS, Watched, check_clean, open_page, png_pixels

pytestmark = pytest.mark.integration

# What each page shows once it has done its first work (an image, a filled grid), for the screenshot.
PAGES = {
    "generate": ("/", "img.result[data-state=ready]"),
    "mix": ("/mix?rows=1,2&cols=3,4,5", ".mix-grid[data-state=ready]"),
    "walk": ("/walk", "main button[type=submit]"),
    "project": ("/project", "input[type=file]"),
    "train": ("/train", "select[name=base-model] option"),
    "library": ("/library", "#models-h"),
}
# Every visible form control has a label a screen reader reads (WCAG 1.3.1, 4.1.2).
UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea")]
    .filter((c) => c.type !== "hidden" && c.offsetParent !== null)
    .filter((c) => !c.labels?.length && !c.getAttribute("aria-label") && !c.getAttribute("aria-labelledby"))
    .map((c) => c.name || c.outerHTML.slice(0, 80))"""


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_loads_offline_with_no_console_error(browser: Browser, service: Serve, name: str) -> None:
    path, shown = PAGES[name]
    for size, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
        watched = open_page(browser, service, viewport)
        try:
            watched.goto(path)
            watched.page.wait_for_selector(shown, state="attached")
            assert watched.page.eval_on_selector("[aria-current=page]", "a => a.textContent")
            assert watched.page.evaluate(UNLABELLED) == []
            # Nothing sticks out sideways on a phone: the page scrolls down only.
            overflow = watched.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name} is {overflow} px wider than a {size} screen"
            watched.screenshot(f"{name}-{size}")
            check_clean(watched)
        finally:
            watched.context.close()


def test_generate_shows_the_api_pixels_and_follows_the_psi_slider(
    laptop: Watched, service: Serve, demo: dict[str, Any]
) -> None:
    laptop.goto("/?seed=7")
    page = laptop.page
    page.wait_for_selector("img.result[data-state=ready]")
    assert page.eval_on_selector("select[name=model]", "s => s.value") == demo["id"]
    api = service.http.get(f"/v1/models/{demo['id']}/images/7.png", params={"psi": 0.7, "noise": "const"})
    assert api.status_code == 200, api.text
    first = laptop.shown_png("img.result")
    assert first.shape == (demo["resolution"], demo["resolution"], 3)
    assert np.array_equal(first, png_pixels(api.content))

    # The slider by keyboard, as a person without a mouse moves it: psi 0.7 -> 0.75 -> ... -> 1.
    page.focus("input[name=psi]")
    for _ in range(6):
        page.keyboard.press("ArrowRight")
    page.wait_for_selector("img.result[data-state=ready][data-query*='psi=1']")
    moved = laptop.shown_png("img.result")
    assert not np.array_equal(moved, first), "psi 1 drew the same image as psi 0.7"
    api = service.http.get(f"/v1/models/{demo['id']}/images/7.png", params={"psi": 1, "noise": "const"})
    assert np.array_equal(moved, png_pixels(api.content))
    # The permalink reproduces the view.
    assert "psi=1" in page.url and "seed=7" in page.url and f"model={demo['id']}" in page.url


def test_the_mixing_grid_renders_every_cell(laptop: Watched, service: Serve, demo: dict[str, Any]) -> None:
    laptop.goto("/mix?rows=1,2&cols=3,4,5")
    page = laptop.page
    page.wait_for_selector(".mix-grid[data-state=ready]")
    images = page.query_selector_all(".mix-grid img")
    assert len(images) == 2 * 3 + 2 + 3
    states = [img.get_attribute("data-state") for img in images]
    assert states == ["ready"] * len(images)
    widths = page.eval_on_selector_all(".mix-grid img", "imgs => imgs.map((i) => i.naturalWidth)")
    assert widths == [demo["resolution"]] * len(images)
    # The first mixed cell (row 1, column 3, coarse styles) is the API's mix.png.
    cell = laptop.shown_png(".mix-grid img.mix-cell")
    api = service.http.get(
        f"/v1/models/{demo['id']}/mix.png", params={"row": 1, "col": 3, "styles": "coarse", "psi": 0.7}
    )
    assert np.array_equal(cell, png_pixels(api.content))


def test_a_walk_job_video_plays(laptop: Watched) -> None:
    laptop.goto("/walk")
    page = laptop.page
    page.fill("input[name=seeds]", "0,1")
    page.fill("input[name=frames]", "12")
    page.fill("input[name=fps]", "6")
    page.click("main button[type=submit]")
    video = page.locator("video.result")
    expect(video).to_be_visible(timeout=TIMEOUT_MS)
    # HAVE_CURRENT_DATA or better, and the clock moves: it is playing, not only loaded.
    page.wait_for_function("() => document.querySelector('video.result').readyState >= 2", timeout=TIMEOUT_MS)
    page.wait_for_function(
        "() => document.querySelector('video.result').currentTime > 0.3", timeout=TIMEOUT_MS
    )
    assert page.eval_on_selector("video.result", "v => v.duration") == pytest.approx(2.0, abs=0.5)
    laptop.screenshot("walk-done-laptop")


def test_an_api_error_is_shown_in_words(laptop: Watched) -> None:
    laptop.allowed.append("status of 422")  # Chromium logs the refused image request
    laptop.goto("/?seed=99999999999")
    alert = laptop.page.locator("main [role=alert]").first
    expect(alert).to_be_visible()
    text = alert.inner_text()
    # The problem's title and its detail, which names the field and the allowed range.
    assert "422" in text and "seed" in text and "4294967295" in text, text
    assert laptop.page.get_attribute("img.result", "data-state") == "error"
    laptop.screenshot("error-laptop")


def test_the_key_field_appears_when_keys_are_on_and_the_key_is_used(browser: Browser) -> None:
    root = Path(tempfile.mkdtemp(prefix="stylegan-browser-keys-"))
    serve = Serve(
        root / "data", root / "serve.log", "--no-worker", env={"STYLEGAN_API_KEYS": "sesame-0123456789abcdef"}
    )
    try:
        serve.wait_ready(workers=False)
        watched = open_page(browser, serve, LAPTOP)
        watched.allowed.append("status of 401")  # the unauthenticated list the page starts with
        try:
            watched.goto("/library")
            page = watched.page
            expect(page.locator("#key-form")).to_be_visible()
            expect(page.locator("#key-needed")).to_be_visible()
            expect(page.locator("main [role=alert]").first).to_contain_text("401")
            page.fill("#api-key", "sesame-0123456789abcdef")
            page.click("#key-form button")
            page.wait_for_selector("html[data-ready=true]")
            expect(page.locator("#models-h")).to_contain_text("Models (1)")  # the demo, seen with the key
            expect(page.locator("main [role=alert]").first).to_be_hidden()
            assert page.evaluate("sessionStorage.getItem('stylegan.apiKey')") == "sesame-0123456789abcdef"
            check_clean(watched)
        finally:
            watched.context.close()
    finally:
        assert serve.stop() == 0, (root / "serve.log").read_text()[-4000:]
        Serve.started.remove(serve)


def test_a_direction_slider_edits_the_image(laptop: Watched, service: Serve, demo: dict[str, Any]) -> None:
    laptop.goto("/?seed=3")
    page = laptop.page
    page.wait_for_selector("img.result[data-state=ready]")
    page.wait_for_selector(".directions input[type=range]")
    before = laptop.shown_png("img.result")
    slider = page.locator(".directions input[type=range]").first
    direction = slider.get_attribute("data-id")
    assert direction is not None
    slider.fill("3")
    page.wait_for_selector(f"img.result[data-state=ready][data-query*='{direction}%3A3']")
    after = laptop.shown_png("img.result")
    assert not np.array_equal(before, after), f"the slider of {direction} changed nothing"
    api = service.http.get(
        f"/v1/models/{demo['id']}/images/3.png",
        params={"psi": 0.7, "noise": "const", "edit": f"{direction}:3"},
    )
    assert api.status_code == 200, api.text
    assert np.array_equal(after, png_pixels(api.content))


def test_a_projection_shows_beside_the_photo_and_edits_and_mixes(laptop: Watched, service: Serve) -> None:
    laptop.goto("/project")
    page = laptop.page
    photo = Path(__file__).resolve().parents[2] / "worker" / "assets" / "demo" / "preview.png"
    page.set_input_files("input[name=image]", str(photo))
    page.fill("input[name=steps]", "10")
    page.click("main button[type=submit]")
    page.wait_for_selector("img.reconstruction[data-state=ready]", timeout=2 * TIMEOUT_MS)
    expect(page.locator(".pair")).to_be_visible()
    assert page.eval_on_selector(".pair img", "img => img.naturalWidth") > 0  # the photo as the model saw it
    before = laptop.shown_png("img.reconstruction")
    # Edit it: a direction slider re-renders the projected w with the edit.
    page.wait_for_selector(".directions input[type=range]")
    page.locator(".directions input[type=range]").first.fill("4")
    page.wait_for_function(
        "(old) => document.querySelector('img.reconstruction').src !== old",
        arg=page.get_attribute("img.reconstruction", "src"),
    )
    page.wait_for_selector("img.reconstruction[data-state=ready]")
    assert not np.array_equal(before, laptop.shown_png("img.reconstruction"))
    # Mix it with seeds.
    page.click("text=Mix with these seeds")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.mix-strip img')].filter((i) => i.naturalWidth > 0).length === 3"
    )
    laptop.screenshot("project-done-laptop")
    # Walk from it: the walk page starts at the projected w, then goes through the seeds.
    page.click("text=Make a latent walk that starts here")
    page.wait_for_url("**/walk?**")
    expect(page.locator("text=The walk starts at projection")).to_be_visible()
    page.fill("input[name=frames]", "6")
    page.fill("input[name=fps]", "6")
    page.click("main button[type=submit]")
    page.wait_for_function("() => document.querySelector('video.result').readyState >= 2", timeout=TIMEOUT_MS)
    page.wait_for_function(
        "() => document.querySelector('video.result').currentTime > 0.2", timeout=TIMEOUT_MS
    )


def test_ganspace_on_request_and_a_direction_sweep_video(laptop: Watched) -> None:
    page = laptop.page
    laptop.goto("/?seed=2")
    page.wait_for_selector("img.result[data-state=ready]")
    page.select_option("select[name=direction-method]", "ganspace")
    page.click("text=Find GANSpace directions")  # a ganspace job, followed to its end
    page.wait_for_selector(".directions input[data-id^='ganspace-']", timeout=2 * TIMEOUT_MS)
    page.locator(".directions input[type=range]").first.fill("2")
    page.wait_for_selector("img.result[data-state=ready][data-query*='edit=ganspace-']")

    laptop.goto("/walk")
    page.wait_for_selector("select[name=sweep-direction] option >> nth=1", state="attached")
    page.fill("input[name=seeds]", "5")
    page.fill("input[name=frames]", "6")
    page.select_option("select[name=sweep-direction]", index=1)
    page.click("main button[type=submit]")
    page.wait_for_function("() => document.querySelector('video.result').currentTime > 0", timeout=TIMEOUT_MS)
