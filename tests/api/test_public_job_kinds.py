"""The generic `POST /v1/jobs` queues only the kinds marked public in JOB_KINDS; the others have routes
of their own that check what their params schema cannot (uploads, ownership, storage keys)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from worker.job_kinds import JOB_KINDS, public_job_kinds

INTERNAL_KINDS = sorted(name for name, entry in JOB_KINDS.items() if not entry.public)


def test_probe_is_the_public_kind_and_the_gan_kinds_are_not() -> None:
    assert public_job_kinds() == ["probe"]
    assert {"training", "dataset_prepare", "model_import", "projection", "mix_grid", "video"} <= set(
        INTERNAL_KINDS
    )


@pytest.mark.parametrize("kind", INTERNAL_KINDS)
def test_internal_kind_is_refused_naming_kind_and_the_accepted_ones(client: TestClient, kind: str) -> None:
    response = client.post("/v1/jobs", json={"kind": kind, "params": {}})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    detail = response.json()["detail"]
    assert detail.startswith("body kind:"), detail
    assert repr(kind) in detail and "own route" in detail
    assert "accepted kinds: probe" in detail
    assert client.get("/v1/jobs").json()["total"] == 0, "a refused request must not leave a job row"


def test_unknown_kind_lists_only_the_accepted_kinds(client: TestClient) -> None:
    detail = client.post("/v1/jobs", json={"kind": "teleport"}).json()["detail"]
    assert "'teleport' is unknown" in detail and detail.endswith("accepted kinds: probe")
    assert "training" not in detail
