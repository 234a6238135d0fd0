"""Per-key quotas: active jobs (429 with Retry-After) and storage (413), only when API keys are set.

The job quota test needs jobs that stay queued, so it publishes to a real Redis with no worker
consuming it; the storage test is refused before anything reaches a broker.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from fastapi.testclient import TestClient

from api.deps import owner_key_for
from api.quotas import JOB_QUOTA_RETRY_AFTER_S, storage_used
from tests.api.test_projections_local import register_tiny_model
from worker.db.models import Artifact, Job
from worker.db.session import make_engine, make_session_factory

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.integration
def test_active_job_quota_is_429_with_retry_after(
    make_client: Callable[..., TestClient], redis_url: str
) -> None:
    client = make_client(broker_url=redis_url, api_keys=f"{KEY_A},{KEY_B}", quota_max_active_jobs=2)
    probe = {"kind": "probe", "params": {}}
    ids = []
    for _ in range(2):
        response = client.post("/v1/jobs", json=probe, headers=auth(KEY_A))
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])

    refused = client.post("/v1/jobs", json=probe, headers=auth(KEY_A))
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == str(JOB_QUOTA_RETRY_AFTER_S)
    problem = refused.json()
    assert problem["status"] == 429 and "2 jobs queued or running" in problem["detail"]
    assert client.get("/v1/jobs", headers=auth(KEY_A)).json()["total"] == 2, "nothing written"

    # The quota is per key: B is not affected by A's jobs.
    assert client.post("/v1/jobs", json=probe, headers=auth(KEY_B)).status_code == 202
    # A finished (here: canceled) job frees its slot.
    assert client.post(f"/v1/jobs/{ids[0]}/cancel", headers=auth(KEY_A)).status_code == 200
    assert client.post("/v1/jobs", json=probe, headers=auth(KEY_A)).status_code == 202
    assert client.post("/v1/jobs", json=probe, headers=auth(KEY_A)).status_code == 429


@pytest.mark.integration
def test_no_job_quota_without_api_keys(make_client: Callable[..., TestClient], redis_url: str) -> None:
    client = make_client(broker_url=redis_url, quota_max_active_jobs=1)
    for _ in range(3):
        assert client.post("/v1/jobs", json={"kind": "probe"}).status_code == 202


def _png(size: int) -> bytes:
    out = io.BytesIO()
    PIL.Image.fromarray(np.random.RandomState(0).randint(0, 256, (size, size, 3), np.uint8)).save(out, "PNG")
    return out.getvalue()


def test_storage_quota_counts_models_and_artifacts_and_refuses_uploads_with_413(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    image = _png(24)
    # First measure what the model row counts for, then set the quota just above it.
    client = make_client(data_dir=tmp_path / "d", api_keys=f"{KEY_A},{KEY_B}", quota_max_storage_bytes=10**12)
    settings = client.app.state.settings  # type: ignore[attr-defined]
    model_id = register_tiny_model(settings, owner_key_for(KEY_A))
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    with sessions() as session:
        used = storage_used(session, owner_key_for(KEY_A))
        assert storage_used(session, owner_key_for(KEY_B)) == 0
    assert used > 0

    limit = used + len(image) + 100
    client = make_client(data_dir=tmp_path / "d", api_keys=f"{KEY_A},{KEY_B}", quota_max_storage_bytes=limit)
    # An artifact of A's earlier job takes the room the upload would need.
    with sessions() as session:
        job = Job(kind="probe", queue="inference", state="succeeded", owner_key=owner_key_for(KEY_A))
        session.add(job)
        session.flush()
        session.add(
            Artifact(
                job_id=job.id, kind="image", name="x.png", file_key="artifacts/x/x.png",
                content_type="image/png", size_bytes=200, sha256="0" * 64, owner_key=owner_key_for(KEY_A),
            )
        )  # fmt: skip
        session.commit()
        assert storage_used(session, owner_key_for(KEY_A)) == used + 200

    response = client.post(
        f"/v1/models/{model_id}/projections",
        files={"image": ("t.png", image, "image/png")},
        data={"steps": "2"},
        headers=auth(KEY_A),
    )
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail = response.json()["detail"]
    assert detail.startswith("image:") and f"{used + 200} of {limit} bytes used" in detail
