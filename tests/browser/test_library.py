"""The Library page in a real Chromium against a real `stylegan serve`: a network file uploaded from the
page and an official network imported from the catalogue (a local mirror) appear with their licence
note and sample as the API does; deleting one from the page removes it from the service."""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import expect

from tests.api.test_serve import Serve
from tests.browser.conftest import CATALOG_ENTRY, MIRRORED, TIMEOUT_MS, Watched, png_pixels

pytestmark = pytest.mark.integration


def _models(service: Serve) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in service.http.get("/v1/models").json()["items"]}


def _generate_matches_the_api(laptop: Watched, service: Serve, model_id: str) -> None:
    laptop.goto(f"/?model={model_id}&seed=3")
    laptop.page.wait_for_selector("img.result[data-state=ready]")
    shown = laptop.shown_png("img.result")
    psi = laptop.page.input_value("input[name=psi]")
    api = service.http.get(f"/v1/models/{model_id}/images/3.png", params={"psi": psi})
    assert api.status_code == 200, api.text
    assert np.array_equal(shown, png_pixels(api.content))


def _delete_from_the_page(laptop: Watched, service: Serve, model_id: str, name: str) -> None:
    """Delete from the page: confirmed in the dialog, gone from the page and from the service."""
    page = laptop.page
    laptop.goto("/library")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Delete model {name}").click()
    expect(page.locator(f"tr[data-id='{model_id}']")).to_have_count(0, timeout=TIMEOUT_MS)
    assert service.http.get(f"/v1/models/{model_id}").status_code == 404


def test_catalogue_import_then_upload_then_delete(laptop: Watched, service: Serve) -> None:
    page = laptop.page
    laptop.goto("/library")

    # Catalogue import: a job followed to its end, then the new model is listed with its licence.
    before = set(_models(service))
    started = time.monotonic()
    page.select_option("select[name=catalog]", CATALOG_ENTRY)
    page.get_by_role("button", name="Import").click()
    import_bar = page.locator(".progress").filter(
        has=page.locator(".progress-label", has_text=re.compile("^Import$"))
    )
    expect(import_bar).to_contain_text("imported", timeout=TIMEOUT_MS)
    import_s = time.monotonic() - started
    (imported,) = set(_models(service)) - before
    model = _models(service)[imported]
    assert model["license_note"], model
    row = page.locator(f"tr[data-id='{imported}']")
    expect(row).to_contain_text("licence noted", timeout=TIMEOUT_MS)
    laptop.screenshot("library-after-import")
    _delete_from_the_page(laptop, service, imported, model["name"])

    # Upload: the same file in NVIDIA's pickle format, through the file input.
    started = time.monotonic()
    page.set_input_files("input[name=network]", str(MIRRORED / "network.pkl"))
    page.fill("input[name=network-name]", "uploaded-from-page")
    page.get_by_role("button", name="Upload network").click()
    row = page.locator("tr", has_text="uploaded-from-page")
    expect(row).to_contain_text("licence noted", timeout=TIMEOUT_MS)
    upload_s = time.monotonic() - started
    uploaded = row.get_attribute("data-id")
    assert uploaded is not None and uploaded not in before

    _generate_matches_the_api(laptop, service, uploaded)
    _delete_from_the_page(laptop, service, uploaded, "uploaded-from-page")
    print(f"library: catalogue import {import_s:.1f} s, upload {upload_s:.1f} s, both deleted from the page")
