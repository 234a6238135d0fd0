"""/metrics: Prometheus text with request latency by route template and job counts from the database."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from worker import jobs


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_jobs_by_state_and_queue(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    sessions = client.app.state.session_factory  # type: ignore[attr-defined]
    with sessions() as session:
        for _ in range(3):
            jobs.create_job(session, kind="probe", params={})
        jobs.create_job(session, kind="probe", params={"queue": "training"})
        done = jobs.create_job(session, kind="probe", params={})
        jobs.request_cancel(session, done.id, owner_key=None)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = _samples(response.text)
    assert samples[("stylegan_queue_depth", (("queue", "inference"),))] == 3
    assert samples[("stylegan_queue_depth", (("queue", "training"),))] == 1
    assert samples[("stylegan_jobs", (("state", "queued"),))] == 4
    assert samples[("stylegan_jobs", (("state", "canceled"),))] == 1
    assert samples[("stylegan_jobs", (("state", "running"),))] == 0


def test_latency_is_labelled_by_route_template(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    for job_id in ("a", "b", "c"):
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    client.get("/no/such/route")
    samples = _samples(client.get("/metrics").text)
    key = (
        "stylegan_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "404")),
    )
    assert samples[key] == 3, "three ids, one label set"
    unmatched = [k for k in samples if ("route", "<unmatched>") in k[1] and k[0].endswith("_count")]
    assert unmatched and samples[unmatched[0]] == 1
    assert not any(re.search(r"/v1/jobs/[abc]$", dict(k[1]).get("route", "")) for k in samples)
