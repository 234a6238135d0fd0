"""/v1/jobs behaviour that needs no worker: cancel of a queued job, listing and pagination, readiness
failures, and a broker that is down at submit time."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from worker import jobs


def _queued(client: TestClient, n: int, **params: object) -> list[str]:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        return [jobs.submit_job(session, kind="probe", params=dict(params))[0].id for _ in range(n)]


def test_cancel_of_a_queued_job_is_immediate(client: TestClient) -> None:
    (job_id,) = _queued(client, 1, seconds=5)
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "canceled" and body["cancel_requested"] is True
    assert body["finished_at"] is not None
    # Canceling again is a no-op; the job stays canceled.
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["state"] == "canceled"


def test_cancel_of_a_finished_job_is_409(client: TestClient) -> None:
    (job_id,) = _queued(client, 1)
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        claimed = jobs.claim(session, job_id, "test-worker", lease_seconds=60)
        assert claimed is not None
        jobs.complete(session, job_id, "test-worker", {"ok": True})
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "succeeded" in response.json()["detail"]


def test_list_filters_and_paginates(client: TestClient) -> None:
    ids = _queued(client, 5)
    client.post(f"/v1/jobs/{ids[0]}/cancel")

    page1 = client.get("/v1/jobs", params={"limit": 2, "offset": 0}).json()
    page2 = client.get("/v1/jobs", params={"limit": 2, "offset": 2}).json()
    page3 = client.get("/v1/jobs", params={"limit": 2, "offset": 4}).json()
    assert page1["total"] == page2["total"] == page3["total"] == 5
    assert (len(page1["items"]), len(page2["items"]), len(page3["items"])) == (2, 2, 1)
    seen = [item["id"] for page in (page1, page2, page3) for item in page["items"]]
    assert sorted(seen) == sorted(ids), "pages must cover every job exactly once"

    queued = client.get("/v1/jobs", params={"state": "queued"}).json()
    assert queued["total"] == 4 and all(item["state"] == "queued" for item in queued["items"])
    canceled = client.get("/v1/jobs", params={"state": "canceled", "kind": "probe"}).json()
    assert [item["id"] for item in canceled["items"]] == [ids[0]]
    assert client.get("/v1/jobs", params={"kind": "train"}).json()["total"] == 0


def test_readyz_names_the_unreachable_broker(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    # No worker could have started without a broker, so the workers check fails beside it.
    assert body["failed"] == ["broker", "workers"]
    assert "broker" in body["detail"]
    assert body["checks"]["database"]["ok"] and body["checks"]["storage"]["ok"]


def test_submit_with_the_broker_down_is_503_and_the_job_is_failed(client: TestClient) -> None:
    response = client.post("/v1/jobs", json={"kind": "probe", "params": {}})
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) > 0
    listing = client.get("/v1/jobs").json()
    assert listing["total"] == 1
    (job,) = listing["items"]
    assert job["state"] == "failed" and "broker" in job["error"]
    assert job["id"] in response.json()["detail"]


def test_a_key_whose_first_attempt_hit_a_dead_broker_can_be_retried(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = {"kind": "probe", "params": {"seconds": 0}}
    headers = {"Idempotency-Key": "retry-me"}
    first = client.post("/v1/jobs", json=request, headers=headers)
    assert first.status_code == 503
    (failed,) = client.get("/v1/jobs").json()["items"]
    assert failed["state"] == "failed" and failed["id"] in first.json()["detail"]

    # The broker is back: the same key and body now queue a fresh job (and hand it to the broker).
    sent: list[list[Any]] = []
    celery = client.app.state.celery  # type: ignore[attr-defined]
    monkeypatch.setattr(celery, "send_task", lambda name, args, **options: sent.append(args))
    retry = client.post("/v1/jobs", json=request, headers=headers)
    assert retry.status_code == 202, retry.text
    job = retry.json()
    assert job["id"] != failed["id"] and job["state"] == "queued"
    assert sent == [[job["id"]]]

    # From now on the key names the new job: replayed as before, refused with another body.
    replay = client.post("/v1/jobs", json=request, headers=headers)
    assert replay.status_code == 200 and replay.json()["id"] == job["id"]
    assert sent == [[job["id"]]], "a replay enqueues nothing"
    other = client.post("/v1/jobs", json={"kind": "probe", "params": {"seconds": 1}}, headers=headers)
    assert other.status_code == 422 and job["id"] in other.json()["detail"]
    # The failed attempt stays visible with its reason.
    states = {item["id"]: item["state"] for item in client.get("/v1/jobs").json()["items"]}
    assert states == {failed["id"]: "failed", job["id"]: "queued"}


def test_every_route_that_queues_a_job_documents_the_same_answer(client: TestClient) -> None:
    """202 with a Location for a new job and 200 for an Idempotency-Key replay, on every such route."""
    spec = client.get("/openapi.json").json()
    queuing = {
        path: operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method == "post" and "202" in operation["responses"]
    }
    assert {"/v1/jobs", "/v1/training-jobs", "/v1/models/{model_id}/projections"} <= set(queuing)
    for path, operation in queuing.items():
        # These store something at once for one body (an upload, a user's direction) and queue a job
        # for another (an import, a GANSpace run).
        both = {"/v1/models", "/v1/datasets", "/v1/models/{model_id}/directions"}
        assert "201" not in operation["responses"] or path in both, path
        headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
        assert "Idempotency-Key" in headers or path == "/v1/datasets", f"{path} takes no Idempotency-Key"


def test_a_queued_job_is_202_with_its_location(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    celery = client.app.state.celery  # type: ignore[attr-defined]
    monkeypatch.setattr(celery, "send_task", lambda name, args, **options: None)
    response = client.post("/v1/jobs", json={"kind": "probe", "params": {}})
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
