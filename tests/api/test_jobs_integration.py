"""The job path end to end on PostgreSQL and Redis: HTTP -> job row -> Redis -> a real `python -m worker`
process -> database, read back over HTTP. Nothing is mocked."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.servers import WorkerProcesses, finished, settings_env, wait_job
from worker.db.migrate import upgrade_head

pytestmark = pytest.mark.integration

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


@pytest.fixture
def service_settings(tmp_path: Path, fresh_postgres_url: str, redis_url: str) -> dict[str, Any]:
    """Settings shared by the app under test and its workers: Postgres, Redis, a temp data dir. Short
    leases and heartbeats so that a cancel reaches a running job within a fraction of a second."""
    values = {
        "data_dir": tmp_path / "data",
        "database_url": fresh_postgres_url,
        "broker_url": redis_url,
        "job_lease_seconds": 4.0,
        "heartbeat_seconds": 0.2,
    }
    upgrade_head(fresh_postgres_url)
    return values


@pytest.fixture
def http(make_client: Callable[..., TestClient], service_settings: dict[str, Any]) -> TestClient:
    return make_client(**service_settings)


def test_probe_runs_on_a_real_worker_over_redis(
    http: TestClient, service_settings: dict[str, Any], worker_processes: WorkerProcesses
) -> None:
    assert http.get("/readyz").json()["failed"] == ["workers"], "database, broker and storage are up"
    worker = worker_processes.spawn(settings_env(**service_settings), queues="inference")

    response = http.post("/v1/jobs", json={"kind": "probe", "params": {"seconds": 0.5}})
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["state"] == "queued" and response.headers["location"] == f"/v1/jobs/{created['id']}"

    job = wait_job(http, created["id"], finished)
    assert job["state"] == "succeeded", job
    assert job["progress"] == 1.0 and job["attempts"] == 1
    assert job["result"]["slept_seconds"] >= 0.5
    assert job["result"]["pid"] not in {os.getpid(), None}, "the probe must run in the worker, not here"
    assert worker.poll() is None
    assert job["started_at"] <= job["finished_at"]
    listing = http.get("/v1/jobs", params={"state": "succeeded"}).json()
    assert [item["id"] for item in listing["items"]] == [created["id"]]


def test_idempotency_key_replay_and_conflict(http: TestClient) -> None:
    body = {"kind": "probe", "params": {"seconds": 1}}
    first = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 202
    replay = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-42"})
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    # The same request with its defaults spelled out is the same request.
    spelled = {"kind": "probe", "params": {"seconds": 1.0, "queue": "inference"}}
    assert http.post("/v1/jobs", json=spelled, headers={"Idempotency-Key": "order-42"}).status_code == 200

    conflict = http.post(
        "/v1/jobs", json={"kind": "probe", "params": {"seconds": 2}}, headers={"Idempotency-Key": "order-42"}
    )
    assert conflict.status_code == 422
    assert conflict.headers["content-type"].startswith("application/problem+json")
    assert "Idempotency-Key" in conflict.json()["detail"] and "order-42" in conflict.json()["detail"]

    other = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-43"})
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
    assert http.get("/v1/jobs").json()["total"] == 2


def test_idempotency_keys_are_per_api_key(
    make_client: Callable[..., TestClient], service_settings: dict[str, Any]
) -> None:
    http = make_client(**service_settings, api_keys=(KEY_A, KEY_B))
    body = {"kind": "probe"}
    a = http.post(
        "/v1/jobs", json=body, headers={"Idempotency-Key": "k1", "Authorization": f"Bearer {KEY_A}"}
    )
    b = http.post(
        "/v1/jobs", json=body, headers={"Idempotency-Key": "k1", "Authorization": f"Bearer {KEY_B}"}
    )
    assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]


def test_cancel_queued_then_a_worker_drops_it(
    http: TestClient, service_settings: dict[str, Any], worker_processes: WorkerProcesses
) -> None:
    canceled = http.post("/v1/jobs", json={"kind": "probe", "params": {"seconds": 0.2}}).json()
    assert http.post(f"/v1/jobs/{canceled['id']}/cancel").json()["state"] == "canceled"

    # Its id is still in Redis; the worker receives it first and must drop it, then run the next one.
    worker_processes.spawn(settings_env(**service_settings), queues="inference")
    later = http.post("/v1/jobs", json={"kind": "probe", "params": {"seconds": 0.2}}).json()
    assert wait_job(http, later["id"], finished)["state"] == "succeeded"
    job = http.get(f"/v1/jobs/{canceled['id']}").json()
    assert job["state"] == "canceled" and job["attempts"] == 0 and job["started_at"] is None


def test_cancel_running_job_stops_it_early(
    http: TestClient, service_settings: dict[str, Any], worker_processes: WorkerProcesses
) -> None:
    worker_processes.spawn(settings_env(**service_settings), queues="training")
    job = http.post("/v1/jobs", json={"kind": "probe", "params": {"seconds": 60, "queue": "training"}}).json()
    running = wait_job(http, job["id"], lambda j: j["state"] == "running" and j["progress"] > 0)

    requested_at = time.monotonic()
    response = http.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["cancel_requested"] is True and response.json()["state"] in {"running", "canceled"}
    final = wait_job(http, job["id"], finished, timeout=20)
    assert final["state"] == "canceled", final
    assert time.monotonic() - requested_at < 15, "a 60 s probe must stop at its next check, not run out"
    assert final["progress"] < 1.0 and running["attempts"] == 1


def test_auth_end_to_end(
    make_client: Callable[..., TestClient],
    service_settings: dict[str, Any],
    worker_processes: WorkerProcesses,
) -> None:
    http = make_client(**service_settings, api_keys=(KEY_A, KEY_B))
    worker_processes.spawn(settings_env(**service_settings, api_keys=f"{KEY_A},{KEY_B}"), queues="inference")
    assert http.post("/v1/jobs", json={"kind": "probe"}).status_code == 401
    assert (
        http.post(
            "/v1/jobs", json={"kind": "probe"}, headers={"Authorization": "Bearer wrong-key-000000000"}
        ).status_code
        == 401
    )

    a = {"Authorization": f"Bearer {KEY_A}"}
    b = {"Authorization": f"Bearer {KEY_B}"}
    job = http.post("/v1/jobs", json={"kind": "probe"}, headers=a).json()
    assert wait_job(http, job["id"], finished, headers=a)["state"] == "succeeded"
    assert http.get(f"/v1/jobs/{job['id']}", headers=b).status_code == 404
    assert http.get("/v1/jobs", headers=b).json() == {"items": [], "total": 0, "limit": 50, "offset": 0}


def test_a_killed_worker_shows_in_readyz_within_30_s_at_the_default_heartbeat(
    http: TestClient, service_settings: dict[str, Any], worker_processes: WorkerProcesses
) -> None:
    defaults = {
        k: v for k, v in service_settings.items() if k not in {"job_lease_seconds", "heartbeat_seconds"}
    }
    app = http.app
    env = settings_env(**defaults)
    inference = worker_processes.spawn(env, queues="inference")
    worker_processes.spawn(env, queues="training")
    # The app under test beats fast (0.2 s); the window is the reader's, so read with the defaults.
    settings = app.state.settings.model_copy(update={"heartbeat_seconds": 10.0, "job_lease_seconds": 60.0})  # type: ignore[attr-defined]
    app.state.settings = settings  # type: ignore[attr-defined]
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["workers"]["detail"] == "inference: 1 worker, training: 1 worker"

    WorkerProcesses.kill(inference)
    killed = time.monotonic()
    while (response := http.get("/readyz")).status_code == 200:
        assert time.monotonic() - killed < 30, "a dead worker must show in /readyz within 30 s"
        time.sleep(0.5)
    print(f"/readyz 503 {time.monotonic() - killed:.1f} s after SIGKILL of the inference worker")
    body = response.json()
    assert body["failed"] == ["workers"]
    assert body["checks"]["workers"]["detail"] == "no live worker consumes the inference queue"
