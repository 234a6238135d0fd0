"""`GET/HEAD /v1/artifacts/{id}` and `GET /v1/jobs/{id}/artifacts` on SQLite: content type, length,
ETag, single byte ranges (206/416), conditional requests and ownership. Artifact rows and files are
written directly, as a job would."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.deps import owner_key_for
from worker.db.models import Artifact, Job
from worker.storage import make_storage

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
CONTENT = os.urandom(10_000)


@pytest.fixture
def http(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_keys=(KEY_A, KEY_B))


def add_artifact(
    client: TestClient, owner: str, data: bytes = CONTENT, name: str = "walk.mp4"
) -> dict[str, Any]:
    """A succeeded job of `owner`'s with one artifact, as a job handler records it."""
    owner_key = owner_key_for(owner)
    storage = make_storage(client.app.state.settings)
    with client.app.state.session_factory() as session:
        job = Job(kind="probe", queue="inference", state="succeeded", owner_key=owner_key, progress=1.0)
        session.add(job)
        session.flush()
        key = storage.put_bytes(f"artifacts/{job.id}/{name}", data)
        row = Artifact(
            job_id=job.id, kind="video", name=name, file_key=key, content_type="video/mp4",
            size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), owner_key=owner_key,
        )  # fmt: skip
        session.add(row)
        session.commit()
        return {"id": row.id, "job_id": job.id, "sha256": row.sha256}


def test_whole_file_with_headers(http: TestClient) -> None:
    art = add_artifact(http, KEY_A)
    response = http.get(f"/v1/artifacts/{art['id']}", headers=A)
    assert response.status_code == 200
    assert response.content == CONTENT
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-length"] == str(len(CONTENT))
    assert response.headers["etag"] == f'"{art["sha256"]}"'
    assert response.headers["accept-ranges"] == "bytes"
    assert "immutable" in response.headers["cache-control"]

    head = http.head(f"/v1/artifacts/{art['id']}", headers=A)
    assert head.status_code == 200 and head.content == b""
    assert (
        head.headers["content-length"] == str(len(CONTENT))
        and head.headers["etag"] == response.headers["etag"]
    )

    cached = http.get(f"/v1/artifacts/{art['id']}", headers={**A, "If-None-Match": response.headers["etag"]})
    assert cached.status_code == 304 and cached.content == b""


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, 9999),
        ("bytes=-512", 9488, 9999),
        ("bytes=9990-20000", 9990, 9999),
    ],
)
def test_single_range(http: TestClient, spec: str, start: int, end: int) -> None:
    art = add_artifact(http, KEY_A)
    response = http.get(f"/v1/artifacts/{art['id']}", headers={**A, "Range": spec})
    assert response.status_code == 206
    assert response.content == CONTENT[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(CONTENT)}"
    assert response.headers["content-length"] == str(end - start + 1)
    head = http.head(f"/v1/artifacts/{art['id']}", headers={**A, "Range": spec})
    assert head.status_code == 206 and head.headers["content-range"] == response.headers["content-range"]


def test_unsatisfiable_range_is_416(http: TestClient) -> None:
    art = add_artifact(http, KEY_A)
    for spec in ("bytes=10000-", "bytes=20000-20010", "bytes=-0"):
        response = http.get(f"/v1/artifacts/{art['id']}", headers={**A, "Range": spec})
        assert response.status_code == 416, spec
        assert response.headers["content-range"] == f"bytes */{len(CONTENT)}"
        assert response.headers["content-type"].startswith("application/problem+json")
        assert spec in response.json()["detail"]


def test_ranges_the_server_ignores(http: TestClient) -> None:
    art = add_artifact(http, KEY_A)
    url = f"/v1/artifacts/{art['id']}"
    # several ranges, another unit, nonsense, a reversed range: the whole file (RFC 9110 §14.2)
    for spec in ("bytes=0-1,5-9", "items=0-4", "bytes=abc", "bytes=50-10"):
        response = http.get(url, headers={**A, "Range": spec})
        assert response.status_code == 200 and response.content == CONTENT, spec
    # If-Range naming another version: the whole file; naming this one: the range.
    stale = http.get(url, headers={**A, "Range": "bytes=0-9", "If-Range": '"0000"'})
    assert stale.status_code == 200 and len(stale.content) == len(CONTENT)
    fresh = http.get(url, headers={**A, "Range": "bytes=0-9", "If-Range": f'"{art["sha256"]}"'})
    assert fresh.status_code == 206 and fresh.content == CONTENT[:10]


def test_ownership_and_job_listing(http: TestClient) -> None:
    art = add_artifact(http, KEY_A)
    for method in ("GET", "HEAD"):
        assert http.request(method, f"/v1/artifacts/{art['id']}", headers=B).status_code == 404
    assert http.get(f"/v1/artifacts/{art['id']}").status_code == 401
    assert http.get("/v1/artifacts/no-such-id", headers=A).status_code == 404

    listing = http.get(f"/v1/jobs/{art['job_id']}/artifacts", headers=A)
    assert listing.status_code == 200
    items = listing.json()["items"]
    assert [(i["id"], i["url"], i["size_bytes"]) for i in items] == [
        (art["id"], f"/v1/artifacts/{art['id']}", len(CONTENT))
    ]
    assert http.get(f"/v1/jobs/{art['job_id']}/artifacts", headers=B).status_code == 404


def test_missing_file_is_404_not_500(http: TestClient) -> None:
    art = add_artifact(http, KEY_A)
    with http.app.state.session_factory() as session:
        key = session.get(Artifact, art["id"]).file_key
    make_storage(http.app.state.settings).delete(key)
    response = http.get(f"/v1/artifacts/{art['id']}", headers=A)
    assert response.status_code == 404 and "no longer in storage" in response.json()["detail"]
