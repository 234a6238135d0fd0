"""Worker presence as the API reports it: `/readyz` names a queue without a live worker,
`GET /v1/workers` lists the live ones with their loaded models (only the caller's), a worker that
stopped renewing drops out after the liveness window, and sampling says plainly that no worker runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.deps import owner_key_for
from worker.db.models import Model, WorkerPresence, utcnow
from worker.presence import WorkerInfo, beat, forget, liveness_window
from worker.settings import Settings


def _beat(client: TestClient, name: str, queues: list[str], loaded: list[str] | None = None) -> None:
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    info = WorkerInfo(
        name=name, queues=queues, device="cpu", concurrency=2, loaded_models=lambda: loaded or []
    )
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        beat(session, info, utcnow(), settings)


def _age(client: TestClient, name: str, by: dt.timedelta) -> None:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(WorkerPresence, name)
        assert row is not None
        row.last_seen = row.last_seen - by
        session.commit()


def _workers_check(client: TestClient) -> dict[str, object]:
    check: dict[str, object] = client.get("/readyz").json()["checks"]["workers"]
    return check


def test_readyz_names_each_queue_without_a_live_worker(client: TestClient) -> None:
    assert _workers_check(client) == {
        "ok": False,
        "detail": "no live worker consumes the inference, training queues",
    }
    _beat(client, "inf@a", ["inference"])
    assert _workers_check(client) == {"ok": False, "detail": "no live worker consumes the training queue"}
    _beat(client, "train@b", ["training"])
    _beat(client, "both@c", ["inference", "training"])
    assert _workers_check(client) == {"ok": True, "detail": "inference: 2 workers, training: 2 workers"}


def test_a_silent_worker_drops_out_after_the_liveness_window(client: TestClient) -> None:
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    window = liveness_window(settings)
    assert window <= dt.timedelta(seconds=30), "a dead worker must show in /readyz within 30 s"
    _beat(client, "inf@a", ["inference"])
    _age(client, "inf@a", window - dt.timedelta(seconds=1))
    assert [w["name"] for w in client.get("/v1/workers").json()["items"]] == ["inf@a"]
    _age(client, "inf@a", dt.timedelta(seconds=2))
    assert client.get("/v1/workers").json()["items"] == []
    assert "inference" in str(_workers_check(client)["detail"])
    # Its next beat brings it back; a clean stop removes the row at once.
    _beat(client, "inf@a", ["inference"])
    assert len(client.get("/v1/workers").json()["items"]) == 1
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        forget(session, "inf@a")
    assert client.get("/v1/workers").json()["items"] == []


def test_long_dead_workers_are_pruned_by_a_live_ones_beat(client: TestClient) -> None:
    _beat(client, "old@a", ["inference"])
    _age(client, "old@a", dt.timedelta(days=1))
    _beat(client, "new@b", ["training"])
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        assert session.scalars(sa.select(WorkerPresence.name)).all() == ["new@b"]


def test_workers_list_shows_queues_device_and_only_the_callers_loaded_models(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(api_keys="key-of-alice-0123456789,key-of-bob-000123456789")
    alice = {"Authorization": "Bearer key-of-alice-0123456789"}
    bob = {"Authorization": "Bearer key-of-bob-000123456789"}
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        for owner, model_id in (("key-of-alice-0123456789", "m-alice"), ("key-of-bob-000123456789", "m-bob")):
            session.add(
                Model(
                    id=model_id, name=model_id, architecture="stylegan2", resolution=64, z_dim=8, w_dim=8,
                    c_dim=0, num_ws=10, file_key="models/shared.safetensors", sha256="0" * 64,
                    size_bytes=1, source="upload", owner_key=owner_key_for(owner),
                )
            )  # fmt: skip
        session.commit()
    _beat(client, "inf@gpu1", ["inference"], loaded=["models/shared.safetensors"])

    assert client.get("/v1/workers").status_code == 401
    (seen_by_alice,) = client.get("/v1/workers", headers=alice).json()["items"]
    assert seen_by_alice["queues"] == ["inference"] and seen_by_alice["device"] == "cpu"
    assert seen_by_alice["concurrency"] == 2 and seen_by_alice["loaded_models"] == ["m-alice"]
    (seen_by_bob,) = client.get("/v1/workers", headers=bob).json()["items"]
    assert seen_by_bob["loaded_models"] == ["m-bob"]


def test_sampling_with_no_live_inference_worker_is_a_503_that_says_so(client: TestClient) -> None:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        session.add(
            Model(
                id="m1", name="m1", architecture="stylegan2", resolution=64, z_dim=8, w_dim=8, c_dim=0,
                num_ws=10, file_key="models/m1.safetensors", sha256="1" * 64, size_bytes=1, source="upload",
            )
        )  # fmt: skip
        session.commit()
    response = client.get("/v1/models/m1/images/42.png")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) > 0
    assert "no inference worker is running" in response.json()["detail"]
