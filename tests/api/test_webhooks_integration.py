"""Webhooks end to end on PostgreSQL and Redis: a job submitted over HTTP with a `webhook_url`, run by a
real worker; the worker's relay hands the delivery to the delivery task, which POSTs to a local receiver
(private URLs allowed by the test's settings). The receiver fails the first attempt with a 500."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.servers import WorkerProcesses, settings_env
from tests.worker.test_webhooks import Receiver
from worker.db.migrate import upgrade_head
from worker.db.models import WebhookDelivery
from worker.db.session import make_engine, make_session_factory
from worker.webhooks import verify_signature

pytestmark = pytest.mark.integration

SECRET = "integration-webhook-secret"
BASE_DELAY = 0.5


@pytest.fixture
def service_settings(tmp_path: Path, fresh_postgres_url: str, redis_url: str) -> dict[str, Any]:
    upgrade_head(fresh_postgres_url)
    return {
        "data_dir": tmp_path / "data",
        "database_url": fresh_postgres_url,
        "broker_url": redis_url,
        "job_lease_seconds": 4.0,
        # The relay rides on the reconcile loop, which runs every heartbeat here.
        "heartbeat_seconds": 0.2,
        "webhook_secret": SECRET,
        "allow_private_urls": True,
        "webhook_base_delay_seconds": BASE_DELAY,
    }


@pytest.fixture
def http(make_client: Callable[..., TestClient], service_settings: dict[str, Any]) -> TestClient:
    return make_client(**service_settings)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([500, 200])
    yield r
    r.close()


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def delivery_rows(database_url: str) -> list[WebhookDelivery]:
    sessions = make_session_factory(make_engine(database_url))
    with sessions() as session:
        rows = list(session.query(WebhookDelivery).order_by(WebhookDelivery.created_at).all())
        session.expunge_all()
        return rows


def test_webhook_delivered_signed_after_a_retry(
    http: TestClient,
    service_settings: dict[str, Any],
    worker_processes: WorkerProcesses,
    receiver: Receiver,
) -> None:
    worker_processes.spawn(settings_env(**service_settings), queues="inference")
    created = http.post("/v1/jobs", json={"kind": "probe", "params": {}, "webhook_url": receiver.url})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert created.json()["webhook_url"] == receiver.url

    wait_until(lambda: len(receiver.requests) >= 2, "two delivery attempts")
    (row,) = wait_until(
        lambda: [r for r in delivery_rows(service_settings["database_url"]) if r.state == "delivered"],
        "the delivery row to say delivered",
    )
    assert (row.job_id, row.attempts, row.last_status, row.last_error) == (job_id, 2, 200, None)
    assert len(receiver.requests) == 2, "delivered once it succeeded, no further attempts"

    (first_headers, first_body), (headers, body) = receiver.requests
    assert headers["Content-Type"] == "application/json"
    assert headers["X-StyleGAN-Event"] == "job.succeeded"
    assert headers["X-StyleGAN-Delivery"] == first_headers["X-StyleGAN-Delivery"] == row.id
    assert verify_signature(SECRET, headers["X-StyleGAN-Signature"], body)
    assert not verify_signature("wrong-secret", headers["X-StyleGAN-Signature"], body)
    payload = json.loads(body)
    assert payload["event"] == "job.succeeded" and first_body == body
    # The job as GET /v1/jobs/{id} shows it (every field the webhook carries, with the same value).
    shown = http.get(f"/v1/jobs/{job_id}").json()
    assert payload["job"]["state"] == "succeeded" and payload["job"]["result"] == shown["result"]
    assert {k: shown[k] for k in payload["job"]} == payload["job"]
    # The retry waited for the backoff (first retry: the base delay, plus up to one relay interval).
    assert row.delivered_at is not None and row.created_at is not None
    assert (row.delivered_at - row.created_at).total_seconds() >= BASE_DELAY


def test_failed_and_canceled_jobs_are_announced(
    http: TestClient, service_settings: dict[str, Any], worker_processes: WorkerProcesses
) -> None:
    receiver = Receiver([200])
    try:
        worker_processes.spawn(settings_env(**service_settings), queues="inference")
        failing = http.post(
            "/v1/jobs",
            json={"kind": "probe", "params": {"fail_message": "on purpose"}, "webhook_url": receiver.url},
        ).json()
        long = http.post(
            "/v1/jobs", json={"kind": "probe", "params": {"seconds": 30}, "webhook_url": receiver.url}
        ).json()
        wait_until(lambda: http.get(f"/v1/jobs/{long['id']}").json()["state"] == "running", "the long probe")
        assert http.post(f"/v1/jobs/{long['id']}/cancel").status_code == 200
        wait_until(lambda: len(receiver.requests) >= 2, "two notifications")
        events = {
            json.loads(body)["job"]["id"]: headers["X-StyleGAN-Event"] for headers, body in receiver.requests
        }
        assert events == {failing["id"]: "job.failed", long["id"]: "job.canceled"}
        failed_body = next(
            json.loads(b) for _, b in receiver.requests if json.loads(b)["job"]["id"] == failing["id"]
        )
        assert failed_body["job"]["error"] == "on purpose"
    finally:
        receiver.close()


def test_private_webhook_urls_are_refused_unless_allowed(make_client: Callable[..., TestClient]) -> None:
    client = make_client()  # default settings: private URLs refused; nothing reaches the broker
    for url, reason in [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://169.254.169.254/latest", "link-local"),
        ("ftp://example.com/x", "scheme"),
    ]:
        response = client.post("/v1/jobs", json={"kind": "probe", "webhook_url": url})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail.startswith("body webhook_url:") and reason in detail, detail
    assert client.get("/v1/jobs").json()["total"] == 0, "a refused request writes no job"
