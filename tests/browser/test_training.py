"""A tiny fine-tune of the demo model started from the Train page: the dataset upload reports what it
accepted and what it rejected, the job page shows live progress and a preview, the job finishes, and
"Sample from this model" opens Generate on the new model with the API's pixels."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.api.test_serve import Serve
from tests.browser.conftest import LAPTOP, PHONE, TIMEOUT_MS, Watched, png_pixels

pytestmark = pytest.mark.integration

IMAGES = 16
# A fine-tune a CPU finishes in seconds (as tests/api/test_user_journey.py): ticks of 0.01 kimg at batch
# 4, a small D, a snapshot every tick, so several progress lines and previews come within a minute.
TINY = {
    "kimg": "0.03",
    "batch": "4",
    "tick": "0.01",
    "snap": "1",
    "cbase": "1024",
    "cmax": "64",
    "preview_images": "4",
}


def png(size: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_tiny_fine_tune_from_the_train_page(laptop: Watched, service: Serve, demo: dict[str, Any]) -> None:
    page = laptop.page
    laptop.goto("/train")
    files = [
        {"name": f"face{i:02d}.png", "mimeType": "image/png", "buffer": png(80, i)} for i in range(IMAGES)
    ]
    files.append({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"})
    page.set_input_files("input[name=dataset-files]", files)
    page.fill("input[name=dataset-name]", "browser faces")
    page.click("text=Upload")
    expect(page.locator(".accepted")).to_contain_text(f"{IMAGES} images accepted", timeout=TIMEOUT_MS)
    expect(page.locator(".rejected")).to_contain_text("notes.txt")
    assert page.eval_on_selector("select[name=dataset]", "s => s.selectedOptions[0].textContent").startswith(
        "browser faces"
    )
    assert page.eval_on_selector("select[name=base-model]", "s => s.value") == demo["id"]

    page.click("summary:has-text('Advanced options')")
    for name, value in TINY.items():
        page.fill(f"input[name={name}]", value)
    page.click("main button[type=submit]")
    page.wait_for_url("**/train/*")
    page.wait_for_selector("html[data-ready=true]")

    # Live: at least two progress updates and a preview while it runs, then the end.
    page.wait_for_function(
        "() => Number(document.querySelector('[data-stat=updates]').textContent) >= 2", timeout=TIMEOUT_MS
    )
    page.wait_for_selector("img.preview[data-count]:not([hidden])", timeout=TIMEOUT_MS)
    expect(page.locator("[data-stat=state]")).to_have_text("succeeded", timeout=3 * TIMEOUT_MS)
    expect(page.locator(".chart svg path").first).to_be_attached()
    assert int(page.get_attribute("img.preview", "data-count") or 0) >= 1
    laptop.screenshot("job-laptop")
    page.set_viewport_size(PHONE)
    laptop.screenshot("job-phone")
    page.set_viewport_size(LAPTOP)

    page.click("text=Sample from this model")
    page.wait_for_selector("html[data-ready=true]")
    page.wait_for_selector("img.result[data-state=ready]")
    model_id = page.eval_on_selector("select[name=model]", "s => s.value")
    assert model_id != demo["id"]
    job_id = service.http.get("/v1/jobs", params={"kind": "training"}).json()["items"][0]
    assert job_id["result"]["model_id"] == model_id
    api = service.http.get(f"/v1/models/{model_id}/images/0.png", params={"psi": 0.7, "noise": "const"})
    assert api.status_code == 200, api.text
    assert np.array_equal(laptop.shown_png("img.result"), png_pixels(api.content))
