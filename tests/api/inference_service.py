"""A running service for the sampling tests: PostgreSQL, Redis, one real inference worker process
(`python -m worker --queues inference`, threads pool) and an app, shared by the tests of one module
(starting a worker and loading torch in it costs seconds; each module pays it once).

Models are uploaded over HTTP (`POST /v1/models`) from the official fixtures, found by glob.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.servers import PostgresServer, RedisServer, WorkerProcesses, settings_env
from worker.db.migrate import upgrade_head
from worker.settings import Settings

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "official"
FIXTURE_DIRS = sorted(p.parent for p in FIXTURES.resolve().glob("*/meta.json"))


def fixture_dir(name_part: str) -> Path:
    """The official fixture folder whose name contains `name_part` (e.g. "sg2ada_uncond", "sg3t")."""
    found = [d for d in FIXTURE_DIRS if name_part in d.name]
    assert found, f"no fixture matching {name_part!r} in {FIXTURE_DIRS}"
    return found[0]


def fixture_meta(directory: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((directory / "meta.json").read_text())
    return meta


@dataclass
class Service:
    settings: dict[str, Any]
    http: TestClient
    workers: WorkerProcesses
    models: dict[str, str] = field(default_factory=dict)  # fixture name -> model id

    def upload(self, directory: Path) -> str:
        """Upload a fixture's network over HTTP once; its model id."""
        name = directory.name
        if name not in self.models:
            with (directory / "network.pkl").open("rb") as fh:
                response = self.http.post(
                    "/v1/models", files={"file": (f"{name}.pkl", fh)}, data={"name": name}
                )
            assert response.status_code in (200, 201), response.text
            self.models[name] = response.json()["id"]
        return self.models[name]

    def app(self, **overrides: Any) -> TestClient:
        """Another app on the same database and storage, with some settings changed."""
        client = TestClient(
            create_app(Settings(**{**self.settings, **overrides})), raise_server_exceptions=False
        )
        client.__enter__()
        return client

    def wait_job(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = self.http.get(f"/v1/jobs/{job_id}").json()
            if job["state"] in {"succeeded", "failed", "canceled"}:
                return job
            assert time.monotonic() < deadline, f"job {job_id} stuck: {job}\n{self.workers.logs()}"
            time.sleep(0.1)


def start_service(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    training_worker: bool = False,
    **overrides: Any,
) -> Iterator[Service]:
    """The app under test with a real inference worker; with `training_worker`, an idle training
    worker too, so that every queue has a consumer and /readyz is 200."""
    root = tmp_path_factory.mktemp("sampling")
    database_url = postgres_server.create_database()
    upgrade_head(database_url)
    redis_server.flush()
    settings = {
        "data_dir": root / "data",
        "database_url": database_url,
        "broker_url": redis_server.url,
        "job_lease_seconds": 10.0,
        "heartbeat_seconds": 0.5,
        "max_batch": 8,
        # Long enough that requests sent together from test threads meet in one batch on a busy CI box.
        "inference_max_wait_ms": 150.0,
        "sample_timeout_seconds": 120.0,
        "sample_rate_per_second": 1000.0,
        "sample_burst": 1000,
        **overrides,
    }
    log_dir = root / "logs"
    log_dir.mkdir()
    workers = WorkerProcesses(log_dir)
    http = TestClient(create_app(Settings(**settings)), raise_server_exceptions=False)
    http.__enter__()
    try:
        workers.spawn(settings_env(**settings), queues="inference", name="inference")
        if training_worker:
            workers.spawn(settings_env(**settings), queues="training", name="training")
        yield Service(settings, http, workers)
    finally:
        http.__exit__(None, None, None)
        workers.stop_all()
        print(workers.logs())


def png_pixels(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


Check = Callable[[dict[str, Any]], bool]
