"""Every 4xx/5xx is application/problem+json with a detail naming what was wrong (RFC 9457)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from api.app import create_app
from api.middleware import MAX_JSON_BYTES
from worker.settings import Settings


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def test_malformed_json_names_the_position(client: TestClient) -> None:
    response = client.post(
        "/v1/jobs", content=b'{"kind": "probe",', headers={"content-type": "application/json"}
    )
    body = assert_problem(response, 422)
    assert "not valid JSON" in str(body["detail"])
    assert "character 17" in str(body["detail"])


def test_wrong_type_names_field_and_value(client: TestClient) -> None:
    body = assert_problem(client.post("/v1/jobs", json={"kind": "probe", "params": "fast"}), 422)
    assert "params" in str(body["detail"]) and '"fast"' in str(body["detail"])

    body = assert_problem(client.post("/v1/jobs", json={"kind": ["probe"]}), 422)
    assert "body kind" in str(body["detail"])


def test_bad_param_value_names_the_parameter(client: TestClient) -> None:
    body = assert_problem(client.post("/v1/jobs", json={"kind": "probe", "params": {"seconds": "ten"}}), 422)
    assert "params.seconds" in str(body["detail"]) and "ten" in str(body["detail"])

    body = assert_problem(client.post("/v1/jobs", json={"kind": "probe", "params": {"secnods": 1}}), 422)
    assert "params.secnods" in str(body["detail"])


def test_missing_and_extra_fields(client: TestClient) -> None:
    body = assert_problem(client.post("/v1/jobs", json={"params": {}}), 422)
    assert "body kind: field required" in str(body["detail"])

    body = assert_problem(client.post("/v1/jobs", json={"kind": "probe", "priority": 9}), 422)
    assert "priority" in str(body["detail"])


def test_unknown_job_kind_lists_the_known_ones(client: TestClient) -> None:
    body = assert_problem(client.post("/v1/jobs", json={"kind": "teleport"}), 422)
    assert "'teleport'" in str(body["detail"]) and "probe" in str(body["detail"])
    assert client.get("/v1/jobs").json()["total"] == 0, "a refused request must not leave a job row"


def test_unknown_job_id(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/jobs/no-such-job"), 404)
    assert "'no-such-job'" in str(body["detail"])
    assert_problem(client.post("/v1/jobs/no-such-job/cancel"), 404)


def test_bad_query_parameters(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/jobs", params={"state": "sleeping"}), 422)
    assert "query state" in str(body["detail"]) and "sleeping" in str(body["detail"])
    body = assert_problem(client.get("/v1/jobs", params={"limit": 0}), 422)
    assert "query limit" in str(body["detail"])


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/nothing-here"), 404)
    assert "/v1/nothing-here" in str(body["detail"])

    response = client.delete("/v1/jobs")
    body = assert_problem(response, 405)
    assert "DELETE" in str(body["detail"])
    assert "POST" in response.headers["allow"] and "GET" in response.headers["allow"]


def test_oversized_declared_body_is_refused_before_reading(client: TestClient) -> None:
    payload = json.dumps({"kind": "probe", "params": {"pad": "x" * MAX_JSON_BYTES}}).encode()
    body = assert_problem(
        client.post("/v1/jobs", content=payload, headers={"content-type": "application/json"}), 413
    )
    assert str(MAX_JSON_BYTES) in str(body["detail"])


def test_oversized_streamed_body_is_cut_off(make_client: Callable[..., TestClient]) -> None:
    limit = 4096
    client = make_client(max_json_body_bytes=limit)
    chunks_sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal chunks_sent
        yield b'{"kind": "probe", "params": {"pad": "'
        for _ in range(64):  # 64 KiB in all, 16x the limit, with no Content-Length
            chunks_sent += 1
            yield b"x" * 1024
        yield b'"}}'

    response = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    body = assert_problem(response, 413)
    assert str(limit) in str(body["detail"])


def test_small_body_under_a_small_limit_still_passes(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_json_body_bytes=4096)
    body = assert_problem(client.post("/v1/jobs", json={"kind": "teleport"}), 422)
    assert "teleport" in str(body["detail"])


def test_unhandled_error_is_a_500_problem_without_internals(
    tmp_path: Path, settings_in: Callable[..., Settings]
) -> None:
    app = create_app(settings_in(tmp_path))

    def explode() -> None:
        raise RuntimeError("secret connection string postgresql://admin:hunter2@db")

    app.add_api_route("/explode", explode)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/explode")
    body = assert_problem(response, 500)
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert body["title"] == "Internal server error"


def test_docs_and_openapi_have_examples(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    create = spec["components"]["schemas"]["JobCreate"]
    assert create["examples"][0]["kind"] == "probe"
    post = spec["paths"]["/v1/jobs"]["post"]
    assert "application/problem+json" in post["responses"]["422"]["content"]
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_an_exhausted_connection_pool_is_a_503_with_retry_after(
    tmp_path: Path, settings_in: Callable[..., Settings]
) -> None:
    """Every pooled connection checked out past the pool timeout (a saturated service) is a 503 to retry,
    not a 500: a one-connection pool, its connection held by the test."""
    import time

    import sqlalchemy as sa

    from worker.db.session import make_engine, make_session_factory

    settings = settings_in(tmp_path)
    app = create_app(settings)
    engine = make_engine(settings.effective_database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    app.state.session_factory = make_session_factory(engine)
    with TestClient(app, raise_server_exceptions=False) as client, engine.connect() as held:
        held.execute(sa.text("SELECT 1"))
        start = time.monotonic()
        response = client.get("/v1/jobs")
        waited = time.monotonic() - start
    body = assert_problem(response, 503)
    assert int(response.headers["retry-after"]) >= 1
    assert "database connection" in str(body["detail"])
    print(f"\npool exhausted: 503 with Retry-After {response.headers['retry-after']} after {waited:.2f} s")
    engine.dispose()
