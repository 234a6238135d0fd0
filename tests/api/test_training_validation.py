"""POST /v1/training-jobs refuses, before any job row exists, what the training would fail on later:
missing or foreign inputs, resolution and class-count mismatches, contradictory options. SQLite, no
broker (the one valid request shows the dead broker's 503)."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.deps import owner_key_for
from tests.api.test_datasets import png
from worker.db.models import Model
from worker.job_kinds import MAX_TRAINING_GPUS
from worker.settings import Settings
from worker.storage import make_storage

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "official"


def fixture_pickle(name: str) -> Path:
    path = FIXTURES / name / "network.pkl"
    assert path.is_file(), f"missing official fixture {path}"
    return path


def register_model(
    settings: Settings,
    sessions: Any,
    pkl: Path,
    owner_key: str | None = None,
    license_note: str | None = None,
) -> str:
    """Store a fixture as the service stores every model (our format under models/<sha256>) and add its
    row. Stands in for POST /v1/models, which another part of the service provides."""
    import tempfile

    from gan.io.checkpoint import convert_network, inspect_network

    with tempfile.TemporaryDirectory() as tmp:
        ours = convert_network(pkl, Path(tmp) / "model.safetensors", license_note=license_note)
        info = inspect_network(ours)
        key = make_storage(settings).put_file(f"models/{info.sha256}.safetensors", ours)
        size = ours.stat().st_size
    with sessions() as session:
        row = Model(
            name=pkl.parent.name,
            architecture=info.architecture,
            resolution=info.resolution,
            z_dim=info.z_dim,
            w_dim=info.w_dim,
            c_dim=info.c_dim,
            num_ws=info.num_ws,
            file_key=key,
            sha256=info.sha256,
            size_bytes=size,
            format="official-pkl",
            config=info.config,
            num_params=info.num_params,
            source="upload",
            license_note=license_note,
            owner_key=owner_key,
        )
        session.add(row)
        session.commit()
        return row.id


def upload_dataset(
    client: TestClient, count: int, side: int, labels: dict[str, int] | None = None, **headers: str
) -> dict[str, Any]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(count):
            zf.writestr(f"img{i:03d}.png", png((side, side), seed=i))
    data = {"labels": json.dumps(labels)} if labels else {}
    response = client.post(
        "/v1/datasets", files={"file": ("set.zip", buf.getvalue())}, data=data, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def world(make_client: Callable[..., TestClient]) -> dict[str, Any]:
    client = make_client(api_keys=(KEY_A, KEY_B), broker_timeout_seconds=0.5)
    app = client.app
    settings, sessions = app.state.settings, app.state.session_factory  # type: ignore[attr-defined]
    a = {"Authorization": f"Bearer {KEY_A}"}
    return {
        "client": client,
        "a": a,
        "b": {"Authorization": f"Bearer {KEY_B}"},
        "model32": register_model(
            settings, sessions, fixture_pickle("sg2ada_uncond_32"), owner_key_for(KEY_A)
        ),
        "cond32": register_model(
            settings, sessions, fixture_pickle("sg2ada_cond4_32_fp16"), owner_key_for(KEY_A)
        ),
        "public64": register_model(settings, sessions, fixture_pickle("sg3t_uncond_64")),  # public (no owner)
        "data32": upload_dataset(client, 4, 32, **a)["id"],
        "data64": upload_dataset(client, 4, 64, **a)["id"],
        "labeled32": upload_dataset(client, 4, 32, {f"img{i:03d}.png": i % 4 for i in range(4)}, **a)["id"],
    }


def _refused(world: dict[str, Any], body: dict[str, Any], field: str, *words: str, key: str = "a") -> None:
    response = world["client"].post("/v1/training-jobs", json=body, headers=world[key])
    assert response.status_code == 422, (body, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    detail = response.json()["detail"]
    assert field in detail and all(w in detail for w in words), detail


def test_inputs_must_exist_be_visible_and_match(world: dict[str, Any]) -> None:
    w = world
    _refused(w, {"dataset_id": w["data32"]}, "cfg", "base_model_id")
    _refused(w, {"dataset_id": "nope", "cfg": "stylegan2"}, "dataset_id", "nope")
    _refused(w, {"dataset_id": w["data32"], "base_model_id": "nope"}, "base_model_id")
    # Another key's dataset and model look absent; a public model is usable by everyone.
    _refused(w, {"dataset_id": w["data32"], "cfg": "stylegan2"}, "dataset_id", key="b")
    _refused(w, {"dataset_id": w["data64"], "base_model_id": w["model32"]}, "base_model_id", "32 px", "64 px")
    _refused(
        w, {"dataset_id": w["data32"], "base_model_id": w["cond32"]}, "base_model_id", "4 classes", "has 0"
    )
    _refused(w, {"dataset_id": w["labeled32"], "base_model_id": w["model32"]}, "base_model_id", "0 classes")
    _refused(
        w,
        {"dataset_id": w["data64"], "base_model_id": w["public64"], "cfg": "paper256"},
        "cfg",
        "stylegan3-t",
    )


def test_bad_options_name_their_field(world: dict[str, Any]) -> None:
    w = world
    base = {"dataset_id": w["data32"], "base_model_id": w["model32"]}
    _refused(w, {**base, "kimg": -1}, "kimg")
    _refused(w, {**base, "aug": "fixed"}, "p", "fixed")
    _refused(w, {**base, "metrics": ["fid50k_full", "bogus"]}, "metrics", "bogus")
    _refused(w, {**base, "cfg": "stylegan4"}, "cfg")
    _refused(w, {**base, "tick": 0}, "tick")
    _refused(w, {**base, "surprise": 1}, "surprise")


def test_a_valid_request_reaches_the_broker(world: dict[str, Any]) -> None:
    w = world
    ok = {"dataset_id": w["labeled32"], "base_model_id": w["cond32"], "kimg": 1}
    response = w["client"].post("/v1/training-jobs", json=ok, headers=w["a"])
    # Valid: the row is written and the (dead) broker makes it 503 with the job marked failed.
    assert response.status_code == 503 and "broker" in response.json()["detail"]
    listed = w["client"].get("/v1/jobs", params={"kind": "training"}, headers=w["a"]).json()["items"]
    assert len(listed) == 1 and listed[0]["state"] == "failed"
    assert listed[0]["params"]["dataset_id"] == w["labeled32"] and listed[0]["params"]["snap"] == 10
    view = w["client"].get(f"/v1/training-jobs/{listed[0]['id']}", headers=w["a"]).json()
    assert view["checkpoints"] == [] and view["events_url"] == f"/v1/jobs/{listed[0]['id']}/events"
    assert w["client"].get(f"/v1/training-jobs/{listed[0]['id']}", headers=w["b"]).status_code == 404


def test_gpus_is_a_count_of_ranks_the_batch_splits_over(world: dict[str, Any]) -> None:
    w = world
    base = {"dataset_id": w["data32"], "base_model_id": w["model32"]}
    start = time.monotonic()
    refused = 0
    # Not a whole count of ranks from 1 to MAX_TRAINING_GPUS (strict: no "2", 2.0 or true either).
    for bad in (0, -1, 10**9, 1e9, "two", "2", 2.5, True, None):
        _refused(w, {**base, "gpus": bad}, "gpus")
        refused += 1
    _refused(w, {**base, "gpus": MAX_TRAINING_GPUS + 1}, "gpus", str(MAX_TRAINING_GPUS))
    # The batch must split into equal shares, each whole minibatch-std groups of D.
    _refused(w, {**base, "gpus": 2, "batch": 3}, "batch", "multiple of gpus 2")
    _refused(w, {**base, "gpus": 2, "batch": 12}, "batch", "6 images per rank", "minibatch-std group of 4")
    # No batch given: the auto preset's at 32 px (64) does not split over 3 ranks.
    _refused(w, {**base, "gpus": 3}, "gpus", "auto preset's batch 64", "multiple of gpus 3")
    _refused(
        w,
        {"dataset_id": w["data32"], "cfg": "stylegan2", "gpus": 16},
        "gpus",
        "2 images per rank",
        "group of 4",
    )
    refused += 5
    # A batch that splits is accepted (the dead broker then answers 503 and the job is marked failed).
    response = w["client"].post("/v1/training-jobs", json={**base, "gpus": 2, "batch": 8}, headers=w["a"])
    assert response.status_code == 503, response.text
    listed = w["client"].get("/v1/jobs", params={"kind": "training"}, headers=w["a"]).json()["items"]
    assert [job["params"]["gpus"] for job in listed] == [2]
    print(f"{refused} gpus/batch requests refused with 422 in {time.monotonic() - start:.2f} s")
