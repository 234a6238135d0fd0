"""Optional bearer-key auth: off without keys; with keys, 401 for a missing or wrong key and each key
sees only its own jobs (another key's job is 404, exactly like a job that does not exist)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from api.deps import owner_key_for
from worker import jobs

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_keys=(KEY_A, KEY_B))


def _job_owned_by(client: TestClient, key: str | None) -> str:
    """A queued job row written the way the service writes it (worker.jobs), owned by `key`."""
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        job, created = jobs.submit_job(
            session, kind="probe", params={}, owner_key=owner_key_for(key) if key else None
        )
        assert created
        return job.id


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "missing Authorization"),
        (_bearer("not-a-key-at-all-123"), "not valid"),
        (_bearer(KEY_A + "x"), "not valid"),
        ({"Authorization": f"Basic {KEY_A}"}, "Bearer"),
        ({"Authorization": "Bearer "}, "Bearer"),
    ],
)
def test_missing_or_wrong_key_is_401(keyed: TestClient, headers: dict[str, str], fragment: str) -> None:
    for method, path in (("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs/x")):
        response = keyed.request(method, path, headers=headers, json={"kind": "probe"})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert fragment in response.json()["detail"]


def test_another_keys_job_is_404_and_invisible(keyed: TestClient) -> None:
    job_a = _job_owned_by(keyed, KEY_A)

    assert keyed.get(f"/v1/jobs/{job_a}", headers=_bearer(KEY_A)).json()["id"] == job_a
    missing = keyed.get("/v1/jobs/no-such-job", headers=_bearer(KEY_B))
    foreign = keyed.get(f"/v1/jobs/{job_a}", headers=_bearer(KEY_B))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["title"] == missing.json()["title"]

    assert keyed.post(f"/v1/jobs/{job_a}/cancel", headers=_bearer(KEY_B)).status_code == 404
    assert keyed.get("/v1/jobs", headers=_bearer(KEY_B)).json()["total"] == 0
    listing = keyed.get("/v1/jobs", headers=_bearer(KEY_A)).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == job_a
    # B's failed cancel did nothing to A's job.
    assert keyed.get(f"/v1/jobs/{job_a}", headers=_bearer(KEY_A)).json()["state"] == "queued"


def test_keys_are_stored_as_digests(keyed: TestClient) -> None:
    job_a = _job_owned_by(keyed, KEY_A)
    with keyed.app.state.session_factory() as session:  # type: ignore[attr-defined]
        owner = jobs.get_job(session, job_a).owner_key
    assert owner is not None and KEY_A not in owner and len(owner) == 64


def test_without_keys_auth_is_off(client: TestClient) -> None:
    job = _job_owned_by(client, None)
    assert client.get(f"/v1/jobs/{job}").status_code == 200
    # A stray header changes nothing when no keys are configured.
    assert client.get(f"/v1/jobs/{job}", headers=_bearer("whatever-key-00000")).status_code == 200


def test_health_endpoints_need_no_key(keyed: TestClient) -> None:
    assert keyed.get("/healthz").status_code == 200
