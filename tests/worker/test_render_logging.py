"""The inference worker's log never carries the images it renders: Celery's success line for the render
task keeps its name, id and run time but not its result (worker.inference.tasks.OmitResult)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from worker.celery_app import make_celery
from worker.demo_model import bundled_demo_path
from worker.inference.messages import ModelRef, SampleRequest
from worker.inference.tasks import RENDER_TASK, TRACE_LOGGER
from worker.settings import Settings
from worker.storage import make_storage

# Nothing is published: the task runs in this process (apply), the broker URL only names the backend.
UNREACHABLE_BROKER = "redis://127.0.0.1:9/0"


def test_rendering_an_image_logs_no_image_bytes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    demo = bundled_demo_path()
    assert demo is not None, "the demo model ships with the package"
    settings = Settings(data_dir=tmp_path, broker_url=UNREACHABLE_BROKER, inference_device="cpu")
    key = "models/demo.safetensors"
    make_storage(settings).put_file(key, demo)
    app = make_celery(settings)
    request = SampleRequest(model=ModelRef(file_key=key), seed=7).model_dump(mode="json")

    caplog.set_level(logging.DEBUG)
    result = app.tasks[RENDER_TASK].apply(args=[request], task_id="render-1").get()

    assert result["outcome"] == "image", result
    png = base64.b64decode(result["data"])
    assert png.startswith(b"\x89PNG") and (result["width"], result["height"]) == (64, 64)
    success = [r for r in caplog.records if r.name == TRACE_LOGGER and "succeeded" in r.getMessage()]
    assert [r.getMessage().split(" succeeded in ")[0] for r in success] == [f"Task {RENDER_TASK}[render-1]"]
    assert "return_value" not in success[0].data  # type: ignore[attr-defined]
    # Not the image, nor any piece of it (the PNG signature's base64 starts every encoded PNG).
    assert "iVBORw0KGgo" not in caplog.text
    assert result["data"][:64] not in caplog.text
    for record in caplog.records:
        assert "iVBORw0KGgo" not in str(getattr(record, "data", ""))
