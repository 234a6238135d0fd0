"""The new user's journey of the README, over HTTP only, against a real `stylegan serve` subprocess on
the embedded default (SQLite, the embedded Redis, local storage, its own two workers): ready, the demo
model, upload an official network, a face by seed (the fixture's pixels), a style mix, upload a
dataset of images, fine-tune, watch the SSE stream to the end, sample the result.

`walk_journey` is shared with tests/deploy/test_compose_settings.py, which walks the same path on
PostgreSQL + Redis with the processes and settings docker-compose.yml gives.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.api.test_serve import Serve

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "official"
# A fine-tune a CPU finishes in seconds: ticks of 0.01 kimg (batch 4), D sized like the fixture's G.
TINY_TRAINING = {"kimg": 0.03, "batch": 4, "tick": 0.01, "cbase": 1024, "cmax": 64, "snap": 1}
DATASET_IMAGES = 24
TERMINAL = {"succeeded", "failed", "canceled"}


def journey_fixture() -> tuple[Path, dict[str, Any]]:
    """The smallest unconditional StyleGAN2-ADA official fixture (found by glob, never by name):
    a fine-tune from it takes seconds."""
    found = []
    for meta_path in sorted(FIXTURES.resolve().glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta["source_repo"] == "stylegan2-ada-pytorch" and meta["init_kwargs"]["c_dim"] == 0:
            found.append((meta["init_kwargs"]["img_resolution"], meta_path.parent, meta))
    assert found, f"no unconditional StyleGAN2-ADA fixture under {FIXTURES}"
    _, directory, meta = min(found, key=lambda item: item[0])
    return directory, meta


def pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB")).astype(np.int16)


def drawing(size: int, seed: int) -> bytes:
    """A smooth random colour field, a plausible training image (noise would be as good for the test,
    but this keeps the previews readable when someone looks)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def wait_ready(http: httpx.Client, alive: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        alive()
        with contextlib.suppress(httpx.TransportError):  # not listening yet
            if http.get("/readyz").status_code == 200:
                return
        assert time.monotonic() < deadline, "/readyz did not answer 200"
        time.sleep(0.2)


def read_events(http: httpx.Client, job_id: str, timeout: float = 180.0) -> list[dict[str, Any]]:
    """The job's SSE stream, read until the server closes it after the terminal state."""
    events: list[dict[str, Any]] = []
    frame: dict[str, str] = {}
    with http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "":
                if "event" in frame:
                    events.append({"event": frame["event"], "data": json.loads(frame["data"])})
                frame = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                frame[name] = value
    return events


def walk_journey(http: httpx.Client) -> dict[str, Any]:
    """The README's curl path; returns what it saw for the caller's own checks."""
    fixture, meta = journey_fixture()
    resolution = meta["init_kwargs"]["img_resolution"]

    # The demo model is there from the start, and samples.
    models = http.get("/v1/models")
    assert models.status_code == 200, models.text
    demo = [m for m in models.json()["items"] if m["demo"]]
    assert demo, f"the bundled demo model is not listed: {models.json()}"
    face = http.get(f"/v1/models/{demo[0]['id']}/images/0.png")
    assert face.status_code == 200, face.text
    assert pixels(face.content).shape == (demo[0]["resolution"], demo[0]["resolution"], 3)

    # Upload an official network; a face by seed equals NVIDIA's within one grey level (the fixture
    # PNG was rendered one image per pass; a batched pass may round one pixel the other way).
    with (fixture / "network.pkl").open("rb") as fh:
        upload = http.post("/v1/models", files={"file": ("network.pkl", fh)}, data={"name": fixture.name})
    assert upload.status_code == 201, upload.text
    model = upload.json()
    assert (model["architecture"], model["resolution"]) == ("stylegan2", resolution)
    seed, psi = meta["seeds"][-1], meta["psis"][-1]
    image = http.get(f"/v1/models/{model['id']}/images/{seed}.png", params={"psi": psi})
    assert image.status_code == 200, image.text
    assert image.headers["content-type"] == "image/png"
    expected = pixels((fixture / f"seed{seed:04d}_psi{psi}.png").read_bytes())
    assert int(np.abs(pixels(image.content) - expected).max()) <= 1

    mix = http.get(f"/v1/models/{model['id']}/mix.png", params={"row": 1, "col": 42, "styles": "coarse"})
    assert mix.status_code == 200, mix.text
    mixed = pixels(mix.content)
    assert mixed.shape == (resolution, resolution, 3)
    row_image = pixels(http.get(f"/v1/models/{model['id']}/images/1.png").content)
    assert not np.array_equal(mixed, row_image), "mixing the coarse styles changed nothing"

    # A dataset of single image files (the `file` field repeated), prepared within the request.
    files = [
        ("file", (f"img{i:03d}.png", drawing(resolution + 8, i), "image/png")) for i in range(DATASET_IMAGES)
    ]
    created = http.post("/v1/datasets", files=files)
    assert created.status_code == 201, created.text
    dataset = created.json()
    assert (dataset["image_count"], dataset["resolution"], dataset["rejected"]) == (
        DATASET_IMAGES,
        resolution,
        [],
    )

    # Fine-tune from the uploaded network and watch it live.
    queued = http.post(
        "/v1/training-jobs",
        json={"dataset_id": dataset["id"], "base_model_id": model["id"], **TINY_TRAINING},
    )
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["id"]
    events = read_events(http, job_id)
    kinds = {e["event"] for e in events}
    assert {"progress", "preview", "checkpoint"} <= kinds, kinds
    assert events[-1]["event"] == "state" and events[-1]["data"]["state"] == "succeeded", events[-1]
    job = http.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["progress"] == 1.0

    result = http.get(f"/v1/models/{job['result']['model_id']}/images/0.png")
    assert result.status_code == 200, result.text
    assert pixels(result.content).shape == (resolution, resolution, 3)
    return {"model": model, "dataset": dataset, "job": job, "events": events}


def test_new_user_journey_on_the_embedded_default(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    serve = Serve(tmp_path / "data", log)
    try:
        serve.http.timeout = httpx.Timeout(60.0)
        wait_ready(serve.http, lambda: serve.process.poll() is None or pytest.fail(log.read_text()[-4000:]))
        walk_journey(serve.http)
    finally:
        assert serve.stop() == 0, log.read_text()[-4000:]
