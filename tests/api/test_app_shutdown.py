"""The app's shutdown closes what its requests opened: the inference client's result subscription and
its listener thread (against a real Redis, as in production)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.services.sampling import inference_client
from worker.db.migrate import upgrade_head
from worker.settings import Settings


def test_the_app_closes_its_inference_client_at_shutdown(tmp_path: Path, redis_url: str) -> None:
    settings = Settings(data_dir=tmp_path, broker_url=redis_url, inference_device="cpu")
    upgrade_head(settings.effective_database_url)
    app = create_app(settings)
    with TestClient(app):
        listener = inference_client(app).listener()
        assert listener.running
    assert not listener.running
    assert not listener._thread.is_alive()
