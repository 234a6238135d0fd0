"""URL and catalogue imports end to end on PostgreSQL and Redis: HTTP -> `model_import` job -> a real
`python -m worker` process that downloads from a local HTTP server (private addresses allowed by the
setting), checks the sha256, runs the sandboxed import and registers the model. One worker and one
database serve the whole module, since each worker start costs seconds of CPU."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.quiet_http import QuietLog
from tests.servers import PostgresServer, RedisServer, WorkerProcesses, settings_env, wait_for
from worker.db.migrate import upgrade_head
from worker.settings import Settings

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "official"
FIXTURE_PICKLES = sorted(FIXTURES.glob("*/network.pkl"))


class _Files(QuietLog, BaseHTTPRequestHandler):
    """`/files/<name>` serves a file (with Content-Length); `/redirect/<name>` answers 302 to it."""

    root: Path

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "/files/" + self.path.removeprefix("/redirect/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = self.root / self.path.removeprefix("/files/")
        if not self.path.startswith("/files/") or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def file_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("served")
    for pkl in FIXTURE_PICKLES:
        (root / f"{pkl.parent.name}.pkl").write_bytes(pkl.read_bytes())
    handler = type("Files", (_Files,), {"root": root})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    file_server: str,
) -> Iterator[dict[str, Any]]:
    """Settings shared by the app and one inference worker for the module."""
    redis_server.flush()
    root = tmp_path_factory.mktemp("models-integration")
    database_url = postgres_server.create_database()
    upgrade_head(database_url)
    first = FIXTURE_PICKLES[0]
    catalog = root / "catalog.json"
    catalog.write_text(
        json.dumps(
            {
                "entries": [
                    {
                        "name": "local-fixture",
                        "architecture": "stylegan2",
                        "resolution": 32,
                        "url": f"{file_server}/files/{first.parent.name}.pkl",
                        "sha256": hashlib.sha256(first.read_bytes()).hexdigest(),
                        "license": "test licence",
                        "commercial_use": True,
                    }
                ]
            }
        )
    )
    values: dict[str, Any] = {
        "data_dir": root / "data",
        "database_url": database_url,
        "broker_url": redis_server.url,
        "job_lease_seconds": 10.0,
        "heartbeat_seconds": 0.5,
        "allow_private_urls": True,
        "catalog_file": catalog,
    }
    log_dir = root / "worker-logs"
    log_dir.mkdir()
    workers = WorkerProcesses(log_dir)
    try:
        workers.spawn(settings_env(**values), queues="inference")
        yield values
    finally:
        workers.stop_all()
        print(workers.logs())


@pytest.fixture
def http(service: dict[str, Any]) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(**service)), raise_server_exceptions=False) as client:
        yield client


def wait_done(client: TestClient, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["state"] in {"succeeded", "failed", "canceled"} else None

    return wait_for(done, timeout, f"job {job_id} to finish", interval=0.2)


def scratch_files(service: dict[str, Any]) -> list[Path]:
    scratch = Path(service["data_dir"]) / "tmp"
    return [p for p in scratch.rglob("*") if p.is_file()] if scratch.exists() else []


def test_url_import_through_a_redirect(http: TestClient, file_server: str, service: dict[str, Any]) -> None:
    pkl = FIXTURE_PICKLES[-1]
    data = pkl.read_bytes()
    url = f"{file_server}/redirect/{pkl.parent.name}.pkl"
    response = http.post("/v1/models", json={"url": url, "sha256": hashlib.sha256(data).hexdigest().upper()})
    assert response.status_code == 202, response.text
    assert response.json()["kind"] == "model_import" and response.headers["location"].startswith("/v1/jobs/")

    job = wait_done(http, response.json()["id"])
    assert job["state"] == "succeeded", job
    assert job["progress"] == 1.0 and job["attempts"] == 1
    assert job["progress_detail"]["bytes"] == job["progress_detail"]["total"] == len(data)
    assert job["result"]["sha256"] == hashlib.sha256(data).hexdigest() and job["result"]["created"] is True

    model = http.get(f"/v1/models/{job['result']['model_id']}").json()
    assert model["sha256"] == hashlib.sha256(data).hexdigest()
    assert model["source"] == f"import:{url}" and model["name"] == f"{pkl.parent.name}"
    assert (
        model["resolution"]
        == json.loads((pkl.parent / "meta.json").read_text())["init_kwargs"]["img_resolution"]
    )
    assert scratch_files(service) == []

    # The same bytes again (another job) find the model instead of importing twice.
    again = http.post("/v1/models", json={"url": f"{file_server}/files/{pkl.parent.name}.pkl"})
    second = wait_done(http, again.json()["id"])
    assert second["state"] == "succeeded" and second["result"] == {**job["result"], "created": False}


def test_checksum_mismatch_fails_the_job(http: TestClient, file_server: str, service: dict[str, Any]) -> None:
    before = http.get("/v1/models").json()["total"]
    url = f"{file_server}/files/{FIXTURE_PICKLES[0].parent.name}.pkl"
    response = http.post("/v1/models", json={"url": url, "sha256": "0" * 64})
    job = wait_done(http, response.json()["id"])
    assert job["state"] == "failed"
    assert job["error"].startswith(f"checksum mismatch for {url}: expected sha256 {'0' * 64}")
    assert http.get("/v1/models").json()["total"] == before
    assert scratch_files(service) == []


def test_missing_url_fails_with_the_http_status(http: TestClient, file_server: str) -> None:
    response = http.post("/v1/models", json={"url": f"{file_server}/files/nothing-here.pkl"})
    job = wait_done(http, response.json()["id"])
    assert job["state"] == "failed" and "HTTP 404" in job["error"]


def test_catalog_import(http: TestClient, service: dict[str, Any]) -> None:
    listing = http.get("/v1/catalog").json()["items"]
    assert [item["name"] for item in listing] == ["local-fixture"]
    response = http.post("/v1/models", json={"catalog": "local-fixture"})
    assert response.status_code == 202, response.text
    job = wait_done(http, response.json()["id"])
    assert job["state"] == "succeeded", job
    model = http.get(f"/v1/models/{job['result']['model_id']}").json()
    assert model["name"] == "local-fixture" and model["source"] == "import:local-fixture"
    assert model["license_note"].startswith("test licence (commercial use allowed)")
    assert model["sha256"] == listing[0]["sha256"]


def test_upload_on_postgres(http: TestClient) -> None:
    pkl = FIXTURE_PICKLES[0]
    with pkl.open("rb") as fh:
        first = http.post("/v1/models", files={"file": ("net.pkl", fh)})
    assert first.status_code in (200, 201), first.text  # the catalogue test may have imported these bytes
    with pkl.open("rb") as fh:
        second = http.post("/v1/models", files={"file": ("net.pkl", fh)})
    assert second.status_code == 200 and second.json()["id"] == first.json()["id"]
    assert http.delete(f"/v1/models/{first.json()['id']}").status_code == 204
    assert http.get(f"/v1/models/{first.json()['id']}").status_code == 404
