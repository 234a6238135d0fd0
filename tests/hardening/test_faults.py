"""Faults on both stacks (tests/hardening/stacks.py): the broker losing its data, the API dying between
its commit and its enqueue, a poison job, a message redelivered past the visibility timeout. The
database holds the truth: every test ends with each job run exactly as often as it should be."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.hardening.stacks import Stack, runs_of
from tests.servers import finished, free_port, wait_for, wait_job
from worker.db.models import Job

pytestmark = pytest.mark.integration


def probe(seconds: float, queue: str = "training") -> dict[str, Any]:
    return {"kind": "probe", "params": {"seconds": seconds, "queue": queue}}


def test_broker_data_loss_loses_no_job(stack: Stack) -> None:
    """Redis loses everything (restart without its data) while one job runs and four wait: the
    reconciler sends the four again from the database, and each job runs exactly once."""
    http = stack.client()
    stack.spawn("training")
    ids = [http.post("/v1/jobs", json=probe(1.5)).json()["id"] for _ in range(5)]
    wait_job(http, ids[0], lambda j: j["state"] == "running")
    stack.lose_broker_data()
    lost_at = time.monotonic()

    jobs = [wait_job(http, job_id, finished, timeout=90) for job_id in ids]
    recovered = time.monotonic() - lost_at
    sessions = stack.sessions()
    runs = [runs_of(sessions, job_id) for job_id in ids]
    print(
        f"[{stack.kind}] broker data lost with 1 job running and 4 queued: all 5 finished "
        f"{recovered:.1f} s later; states {[j['state'] for j in jobs]}, runs {runs}"
    )
    assert [j["state"] for j in jobs] == ["succeeded"] * 5
    assert runs == [1] * 5, "a job ran twice, or never"
    log = stack.workers.logs()
    assert "lost message" in log, "the reconciler did not send anything again"


API_SCRIPT = """
import uvicorn
from api.app import create_app
from worker.settings import Settings
uvicorn.run(create_app(Settings()), host="127.0.0.1", port={port}, log_level="warning")
"""


def test_api_killed_between_commit_and_enqueue_the_job_still_runs(stack: Stack) -> None:
    """A real API process whose broker never answers commits the job row, then hangs in its publish;
    it is SIGKILLed there. A worker's reconciler finds the queued job without a message and sends it."""
    # A broker that accepts connections and never replies: the publish waits for its timeout.
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(64)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STYLEGAN_")},
        **stack.env,
        "STYLEGAN_BROKER_URL": f"redis://127.0.0.1:{black_hole.getsockname()[1]}/0",
        "STYLEGAN_BROKER_TIMEOUT_SECONDS": "60",
        "STYLEGAN_DATABASE_URL": stack.settings.effective_database_url,
    }
    log = stack.workers.log_dir / "api.log"
    with log.open("wb") as out:
        api = subprocess.Popen(
            [sys.executable, "-c", API_SCRIPT.format(port=port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"

        def listening() -> bool:
            assert api.poll() is None, log.read_text()
            return _answers(f"{base}/healthz")

        wait_for(listening, 60, "the API process to listen")
        posted: list[object] = []
        sender = threading.Thread(
            target=lambda: posted.append(_post(f"{base}/v1/jobs", probe(0.2, "inference"))), daemon=True
        )
        sender.start()
        sessions = stack.sessions()

        def committed() -> str | None:
            with sessions() as session:
                return session.scalar(sa.select(Job.id).where(Job.state == "queued"))

        job_id = wait_for(committed, 30, "the API to commit the job row")
        time.sleep(0.5)  # it is inside the publish now, waiting on the silent broker
        assert api.poll() is None and not posted, "the API answered; the publish did not hang"
        os.killpg(api.pid, signal.SIGKILL)
        api.wait(10)
        killed_at = time.monotonic()
    finally:
        if api.poll() is None:
            os.killpg(api.pid, signal.SIGKILL)
        black_hole.close()

    http = stack.client()
    stack.spawn("inference")
    job = wait_job(http, job_id, finished, timeout=60)
    print(
        f"[{stack.kind}] API SIGKILLed between commit and enqueue: job {job['state']} "
        f"{time.monotonic() - killed_at:.1f} s later, runs {runs_of(sessions, job_id)}"
    )
    assert job["state"] == "succeeded" and runs_of(sessions, job_id) == 1


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def _post(url: str, body: dict[str, Any]) -> object:
    try:
        return httpx.post(url, json=body, timeout=120).status_code
    except httpx.HTTPError as exc:
        return exc


def test_poison_job_fails_after_max_attempts_while_the_queue_keeps_flowing(stack: Stack) -> None:
    """A job that kills the process running it (as the OOM killer would) every time: after
    job_max_attempts runs it is failed, and the jobs queued behind it all run meanwhile."""
    http = stack.client()
    stack.spawn("training")
    sessions = stack.sessions()
    poison = http.post("/v1/jobs", json=probe(30)).json()["id"]
    behind: list[str] = []
    kills = 0
    started = time.monotonic()
    while True:
        with sessions() as session:
            job = session.get(Job, poison, populate_existing=True)
            assert job is not None
            state, holder = job.state, job.worker_id
        if state not in {"queued", "running"}:
            break
        if state == "running" and holder is not None:
            # The claim token names the pool process running the job (worker/tasks/run.py).
            pid = int(holder.split("/")[1])
            try:
                os.kill(pid, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass  # killed already; its lease has not run out yet
            # Two healthy jobs queued behind each poisoned run.
            behind += [http.post("/v1/jobs", json=probe(0.1)).json()["id"] for _ in range(2)]
            wait_for(lambda h=holder: _holder(sessions, poison) != h, 30, "the poisoned run to be let go")
        assert time.monotonic() - started < 120, "the poison job is still going after 120 s"
        time.sleep(0.05)
    poisoned = wait_job(http, poison, finished)
    others = [wait_job(http, job_id, finished, timeout=60) for job_id in behind]
    print(
        f"[{stack.kind}] poison job: {poisoned['state']} after {poisoned['attempts']} attempts and "
        f"{kills} kills in {time.monotonic() - started:.1f} s ({poisoned['error']!r}); "
        f"{sum(o['state'] == 'succeeded' for o in others)}/{len(others)} jobs behind it succeeded"
    )
    assert poisoned["state"] == "failed" and poisoned["attempts"] == stack.settings.job_max_attempts
    assert "worker lost 3 times" in poisoned["error"]
    assert [o["state"] for o in others] == ["succeeded"] * len(others)
    assert all(runs_of(sessions, job_id) == 1 for job_id in behind)


def _holder(sessions: Any, job_id: str) -> str | None:
    with sessions() as session:
        job = session.get(Job, job_id, populate_existing=True)
        return None if job is None else job.worker_id


def test_redelivery_past_the_visibility_timeout_runs_the_job_once(stack: Stack) -> None:
    """With a 1 s visibility timeout, Redis hands a 5 s job's message to the other worker while the
    first still runs it: the duplicate is dropped at the claim, and the job runs once."""
    http = stack.client()
    for name in ("first", "second"):
        stack.spawn("training", name=name, broker_visibility_timeout_seconds=1.0)
    job_id = http.post("/v1/jobs", json=probe(5)).json()["id"]
    job = wait_job(http, job_id, finished, timeout=60)
    log = stack.workers.logs()
    duplicates = log.count(f"job {job_id}: not queued (duplicate delivery or canceled); dropped")
    runs = runs_of(stack.sessions(), job_id)
    print(
        f"[{stack.kind}] visibility timeout 1 s, job of 5 s: {duplicates} redeliveries dropped, runs {runs}"
    )
    assert job["state"] == "succeeded" and job["attempts"] == 1 and runs == 1
    assert duplicates >= 1, "no redelivery happened: the test proved nothing"
