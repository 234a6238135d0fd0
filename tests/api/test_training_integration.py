"""Datasets and training jobs end to end on PostgreSQL and Redis with real worker processes: a large
upload prepared by a dataset_prepare job; a fine-tune from an official fixture that runs to succeeded
with progress, preview and checkpoint events over SSE and yields a model that samples; cancel mid-run
(canceled, final checkpoint kept); SIGKILL of the training worker (the replacement resumes from the last
checkpoint, attempt 2). Networks are tiny (the 32 px fixture, D at cbase 1024) and runs a few hundredths
of a kimg, so each run takes seconds on one CPU core."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from tests.api.test_datasets import png
from tests.api.test_events import parse_sse
from tests.api.test_training_validation import fixture_pickle, register_model
from tests.servers import PostgresServer, RedisServer, WorkerProcesses, finished, settings_env, wait_job
from worker.db.migrate import upgrade_head
from worker.db.models import Checkpoint, Dataset, Model
from worker.settings import Settings
from worker.storage import make_storage

pytestmark = pytest.mark.integration

LICENSE = "NVIDIA Source Code License (test fixture)"
# A tiny fine-tune: batch 4, ticks of 0.012 kimg (3 iterations), D shrunk to the fixture's size.
TINY = {"batch": 4, "tick": 0.01, "cbase": 1024, "cmax": 64, "preview_images": 4, "snap": 1}


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, redis_server: RedisServer
) -> Iterator[dict[str, Any]]:
    """One database, broker, app and pair of workers (training, inference) for the module."""
    root = tmp_path_factory.mktemp("training")
    redis_server.flush()
    values: dict[str, Any] = {
        "data_dir": root / "data",
        "database_url": postgres_server.create_database(),
        "broker_url": redis_server.url,
        "job_lease_seconds": 3.0,
        "heartbeat_seconds": 0.5,
        "events_poll_seconds": 0.1,
        "events_keepalive_seconds": 1.0,
    }
    upgrade_head(values["database_url"])
    (root / "logs").mkdir()
    workers = WorkerProcesses(root / "logs")
    env = settings_env(**values)
    training = workers.spawn(env, queues="training", name="training")
    workers.spawn(env, queues="inference", name="inference")
    app = create_app(Settings(**values))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            model_id = register_model(
                app.state.settings,
                app.state.session_factory,
                fixture_pickle("sg2ada_uncond_32"),
                None,
                LICENSE,
            )
            yield {
                "client": client,
                "app": app,
                "values": values,
                "env": env,
                "workers": workers,
                "training": training,
                "model_id": model_id,
            }
    finally:
        workers.stop_all()
        print(workers.logs())


def dataset_zip(count: int = 24) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(count):
            zf.writestr(f"faces/{i:03d}.png", png((40, 40), seed=i))
        zf.writestr("../escape.png", png((40, 40), seed=0))
    return buf.getvalue()


def read_stream(client: TestClient, job_id: str, **headers: str) -> list[dict[str, Any]]:
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    return parse_sse(text)[0]


@pytest.fixture(scope="module")
def dataset_id(service: dict[str, Any]) -> str:
    """Uploaded as a large upload (inline limit 0 on this app): a dataset_prepare job on the inference
    worker prepares and registers it."""
    app = create_app(Settings(**service["values"], dataset_inline_max_bytes=0))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/datasets", files={"file": ("faces.zip", dataset_zip())})
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["kind"] == "dataset_prepare" and response.headers["location"] == f"/v1/jobs/{job['id']}"
        done = wait_job(client, job["id"], finished)
        assert done["state"] == "succeeded", done
        dataset = client.get(f"/v1/datasets/{done['result']['dataset_id']}").json()
    assert dataset["image_count"] == 24 and dataset["resolution"] == 32 and dataset["job_id"] == job["id"]
    assert [(r["name"], r["reason"]) for r in dataset["rejected"]] == [("../escape.png", "unsafe path")]
    # The staged upload is gone once the dataset exists.
    assert not list((Path(service["values"]["data_dir"]) / "files" / "uploads").rglob("*.zip"))
    return str(dataset["id"])


def test_fine_tune_runs_to_succeeded_with_live_events_and_yields_a_model(
    service: dict[str, Any], dataset_id: str
) -> None:
    client: TestClient = service["client"]
    body = {"dataset_id": dataset_id, "base_model_id": service["model_id"], "kimg": 0.05, **TINY}
    response = client.post("/v1/training-jobs", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert (
        response.json()["state"] == "queued" and response.headers["location"] == f"/v1/training-jobs/{job_id}"
    )

    events = read_stream(client, job_id)  # returns when the stream closes, after the terminal state
    kinds = [e["event"] for e in events]
    assert events[-1] == {**events[-1], "event": "state", "data": {"state": "succeeded"}}
    assert [e["data"]["state"] for e in events if e["event"] == "state"] == ["running", "succeeded"]
    ticks = [e["data"] for e in events if e["event"] == "progress" and e["data"]["tick"] is not None]
    assert len(ticks) >= 4 and ticks[-1]["kimg"] >= 0.05 and ticks[-1]["fraction"] == 1.0
    assert all(t["total_kimg"] == 0.05 and t["sec_per_kimg"] > 0 for t in ticks)
    assert [t["kimg"] for t in ticks] == sorted(t["kimg"] for t in ticks)
    assert {"G/loss", "D/loss"} <= set(ticks[-1]["losses"]) and 0 <= ticks[-1]["augment_p"] <= 1
    assert kinds.count("preview") >= 2 and kinds.count("checkpoint") == len(ticks)

    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["progress"] == 1.0 and job["attempts"] == 1
    assert job["progress_detail"]["preview_url"].startswith("/v1/artifacts/")
    view = client.get(f"/v1/training-jobs/{job_id}").json()
    last_preview = [e for e in events if e["event"] == "preview"][-1]["data"]
    assert view["preview_url"] == last_preview["url"]
    assert [c["id"] for c in view["checkpoints"]] == job["result"]["checkpoints"]
    assert len(view["checkpoints"]) == 3  # the newest three are kept
    assert view["checkpoints"][-1]["kimg"] == ticks[-1]["kimg"] == job["result"]["kimg"]

    # The new model: a Model row in our format whose licence note names its base model and dataset and
    # keeps the base's (NVIDIA) licence, and it generates an image.
    model_id = job["result"]["model_id"]
    assert view["model_id"] == model_id
    sessions, settings = service["app"].state.session_factory, service["app"].state.settings
    with sessions() as session:
        model = session.get(Model, model_id)
        base, dataset = session.get(Model, service["model_id"]), session.get(Dataset, dataset_id)
        assert model is not None and base is not None and dataset is not None
        provenance = (
            f"Fine-tuned from {base.name} ({base.id}) on dataset {dataset.name} ({dataset.id}) for "
            f"{job['result']['kimg']:.3f} kimg; base licence: {LICENSE}"
        )
        assert model.source == f"training:{job_id}" and model.license_note == provenance
        assert (model.resolution, model.c_dim, model.architecture) == (32, 0, "stylegan2")
        file_key = model.file_key
    from gan.io.checkpoint import inspect_network, load_generator
    from gan.sampling import seed_to_z, to_uint8

    path = make_storage(settings).local_path(file_key)
    assert path is not None and inspect_network(path).license == provenance
    import torch

    G = load_generator(path)
    with torch.no_grad():
        image = to_uint8(
            G(torch.from_numpy(seed_to_z(0, G.config.z_dim)).float(), torch.zeros(1, 0), psi=0.7)
        )
    assert image.shape[-3:-1] == (32, 32) or image.shape[-2:] == (32, 32)
    assert np.asarray(image).std() > 0

    # Resuming the stream after an event returns exactly the later ones.
    middle = events[len(events) // 2]["id"]
    assert read_stream(client, job_id, **{"Last-Event-ID": str(middle)}) == [
        e for e in events if e["id"] > middle
    ]


def test_cancel_mid_training_keeps_a_final_checkpoint(service: dict[str, Any], dataset_id: str) -> None:
    client: TestClient = service["client"]
    body = {"dataset_id": dataset_id, "base_model_id": service["model_id"], "kimg": 5, **TINY, "snap": 1000}
    job_id = client.post("/v1/training-jobs", json=body).json()["id"]
    wait_job(client, job_id, lambda j: (j["progress_detail"] or {}).get("tick") not in (None, 0))
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["cancel_requested"] is True

    job = wait_job(client, job_id, finished, timeout=60)
    assert job["state"] == "canceled" and job["progress"] < 0.5
    events = read_stream(client, job_id)
    assert events[-1]["data"] == {"state": "canceled", "error": "canceled on request"}
    # snap 1000: tick 0 wrote the first checkpoint; the only other one is the final one at the stop.
    checkpoints = [e["data"] for e in events if e["event"] == "checkpoint"]
    ticks = [e["data"] for e in events if e["event"] == "progress" and e["data"]["tick"] is not None]
    assert len(checkpoints) == 2 and checkpoints[-1]["kimg"] == ticks[-1]["kimg"] > checkpoints[0]["kimg"]
    view = client.get(f"/v1/training-jobs/{job_id}").json()
    assert view["checkpoints"][-1]["kimg"] == ticks[-1]["kimg"] and view["model_id"] is None


def wait_for_two_checkpoints(service: dict[str, Any], job_id: str) -> Callable[[], list[float]]:
    """Wait until the job has stored two checkpoints and is not near its end; returns a function
    that reads the kimg of its stored checkpoints."""
    sessions = service["app"].state.session_factory

    def checkpoints() -> list[float]:
        with sessions() as session:
            return list(session.scalars(sa.select(Checkpoint.kimg).where(Checkpoint.job_id == job_id)).all())

    wait_job(service["client"], job_id, lambda j: len(checkpoints()) >= 2 and j["progress"] < 0.8)
    return checkpoints


def test_sigkilled_training_worker_is_replaced_and_the_job_resumes_from_its_last_checkpoint(
    service: dict[str, Any], dataset_id: str
) -> None:
    client: TestClient = service["client"]
    workers: WorkerProcesses = service["workers"]
    body = {"dataset_id": dataset_id, "base_model_id": service["model_id"], "kimg": 0.15, **TINY, "snap": 2}
    job_id = client.post("/v1/training-jobs", json=body).json()["id"]
    checkpoints = wait_for_two_checkpoints(service, job_id)
    workers.kill(service["training"])  # SIGKILL to the worker and its pool child, mid-run
    resume_kimg = max(checkpoints())
    # The tests after this one follow the training worker that runs their jobs now.
    service["training"] = workers.spawn(service["env"], queues="training", name="replacement")

    job = wait_job(client, job_id, finished, timeout=120)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2
    events = read_stream(client, job_id)
    states = [e["data"]["state"] for e in events if e["event"] == "state"]
    assert states == ["running", "queued", "running", "succeeded"]
    second = [e["data"] for e in events if e["event"] == "progress" and e["data"]["attempt"] == 2]
    # The second run started where the last checkpoint left off, not from zero.
    assert second[0]["resumed_from_kimg"] == resume_kimg and second[0]["kimg"] == resume_kimg
    assert all(p["kimg"] > resume_kimg for p in second[1:])
    assert job["result"]["kimg"] >= 0.15
    print(json.dumps({"resumed_from_kimg": resume_kimg, "final_kimg": job["result"]["kimg"]}))


def rank_processes(worker: Any) -> list[str]:
    """Command lines of the training ranks started under this worker (its process group)."""
    return [cmdline for _, _, cmdline in rank_process_table(worker)]


def rank_process_table(worker: Any) -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of each training rank started under this worker."""
    pgid, found = worker.pid, []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and "gan.training.local_ranks" in cmdline:
            found.append((int(entry.name), int(fields[1]), cmdline))
    return found


def test_fine_tune_on_two_gloo_ranks_reports_and_yields_a_model_that_samples(
    service: dict[str, Any], dataset_id: str
) -> None:
    """`gpus: 2` on a CPU worker: the pool child is rank 0 (its callback reports), a child process is
    rank 1, and gloo averages their gradients."""
    client: TestClient = service["client"]
    body = {"dataset_id": dataset_id, "base_model_id": service["model_id"], "kimg": 0.05, **TINY, "gpus": 2}
    start = time.monotonic()
    response = client.post("/v1/training-jobs", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.json()["params"]["gpus"] == 2
    seen_ranks: list[str] = []
    wait_job(
        client, job_id, lambda j: finished(j) or bool(seen_ranks.extend(rank_processes(service["training"])))
    )
    events = read_stream(client, job_id)
    seconds = time.monotonic() - start
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "succeeded", job
    progress = [e["data"] for e in events if e["event"] == "progress"]
    ticks = [p for p in progress if p["tick"] is not None]
    assert progress and all(p["world_size"] == 2 for p in progress)
    assert len(ticks) >= 4 and ticks[-1]["fraction"] == 1.0 and ticks[-1]["kimg"] >= 0.05
    kinds = [e["event"] for e in events]
    assert kinds.count("preview") >= 2 and kinds.count("checkpoint") == len(ticks)
    # world_size is what the process group had, not the request echoed: training returns it.
    assert job["result"]["world_size"] == 2 and job["result"]["kimg"] == ticks[-1]["kimg"]
    assert any("--rank 1 --world-size 2" in c for c in seen_ranks), seen_ranks
    assert rank_processes(service["training"]) == []  # rank 1 exited with the run
    log_text = Path(service["training"].log_path).read_text(errors="replace")
    assert "training on 2 ranks (gloo, cpu)" in log_text

    image = client.get(f"/v1/models/{job['result']['model_id']}/images/0.png")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    print(
        f"2-rank fine-tune: {seconds:.1f} s, {len(ticks)} ticks, {kinds.count('checkpoint')} checkpoints, "
        f"{len(progress)} progress events, world_size {job['result']['world_size']}, "
        f"sample {len(image.content)} bytes"
    )


def test_cancel_of_a_two_rank_run_stops_both_ranks_with_a_final_checkpoint(
    service: dict[str, Any], dataset_id: str
) -> None:
    client: TestClient = service["client"]
    body = {
        "dataset_id": dataset_id,
        "base_model_id": service["model_id"],
        "kimg": 5,
        **TINY,
        "snap": 1000,
        "gpus": 2,
    }
    job_id = client.post("/v1/training-jobs", json=body).json()["id"]
    wait_job(client, job_id, lambda j: (j["progress_detail"] or {}).get("tick") not in (None, 0))
    assert len(rank_processes(service["training"])) == 1
    asked = time.monotonic()
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["cancel_requested"] is True
    job = wait_job(client, job_id, finished, timeout=60)
    took = time.monotonic() - asked
    assert job["state"] == "canceled" and job["progress"] < 0.5
    events = read_stream(client, job_id)
    checkpoints = [e["data"] for e in events if e["event"] == "checkpoint"]
    ticks = [e["data"] for e in events if e["event"] == "progress" and e["data"]["tick"] is not None]
    assert len(checkpoints) == 2 and checkpoints[-1]["kimg"] == ticks[-1]["kimg"] > checkpoints[0]["kimg"]
    assert rank_processes(service["training"]) == []
    print(
        f"2-rank cancel: canceled {took:.1f} s after the request, final checkpoint at {ticks[-1]['kimg']} kimg"
    )


def test_sigkilled_rank_0_takes_rank_1_with_it_and_the_job_resumes_on_two_ranks(
    service: dict[str, Any], dataset_id: str
) -> None:
    """An OOM kill of the pool child (rank 0) alone: rank 1 must not stay behind (it dies with its
    parent), and the worker's next child resumes the job from its last checkpoint, again on 2 ranks."""
    client: TestClient = service["client"]
    body = {
        "dataset_id": dataset_id,
        "base_model_id": service["model_id"],
        "kimg": 0.15,
        **TINY,
        "snap": 2,
        "gpus": 2,
    }
    job_id = client.post("/v1/training-jobs", json=body).json()["id"]
    checkpoints = wait_for_two_checkpoints(service, job_id)
    ((rank1, rank0, _),) = rank_process_table(service["training"])
    os.kill(rank0, signal.SIGKILL)
    start = time.monotonic()
    while rank1 in [pid for pid, _, _ in rank_process_table(service["training"])]:
        assert time.monotonic() - start < 10, "rank 1 outlived rank 0"
        time.sleep(0.05)
    gone = time.monotonic() - start
    resume_kimg = max(checkpoints())

    job = wait_job(client, job_id, finished, timeout=120)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2 and job["result"]["world_size"] == 2
    events = read_stream(client, job_id)
    second = [e["data"] for e in events if e["event"] == "progress" and e["data"]["attempt"] == 2]
    assert second[0]["resumed_from_kimg"] == resume_kimg and second[0]["kimg"] == resume_kimg
    assert all(p["kimg"] > resume_kimg and p["world_size"] == 2 for p in second[1:])
    print(
        f"rank 1 exited {gone:.2f} s after rank 0 was killed; attempt 2 resumed at {resume_kimg} kimg "
        f"and finished at {job['result']['kimg']} kimg on {job['result']['world_size']} ranks"
    )
