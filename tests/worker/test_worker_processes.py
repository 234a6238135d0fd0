"""Real worker processes over real Redis and PostgreSQL: running, racing, crashing and canceling.

Leases are short here (2 s, heartbeat 0.5 s) so that a lost worker is noticed within seconds.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.servers import WorkerProcesses, settings_env, wait_for
from worker import jobs
from worker.celery_app import TASK_NAME, enqueue, make_celery
from worker.db.migrate import upgrade_head
from worker.db.models import Job
from worker.db.session import make_engine, make_session_factory
from worker.settings import Settings

pytestmark = pytest.mark.integration

LEASE_S = 2.0
HEARTBEAT_S = 0.5
# Worker start (imports, broker connection) on a loaded 2-core machine, plus a lease or two.
WAIT_S = 60.0


@dataclass
class Service:
    settings: Settings
    env: dict[str, str]
    sessions: sessionmaker[Session]
    workers: WorkerProcesses

    def submit(self, **params: object) -> Job:
        with self.sessions() as s:
            job = jobs.create_job(s, kind="probe", params=params, max_attempts=self.settings.job_max_attempts)
        enqueue(make_celery(self.settings), job)
        return job

    def job(self, job_id: str) -> Job:
        with self.sessions() as s:
            return jobs.get_job(s, job_id)

    def wait(self, job_id: str, *states: str, attempts: int | None = None) -> Job:
        def reached() -> Job | None:
            job = self.job(job_id)
            ok = job.state in states and (attempts is None or job.attempts == attempts)
            return job if ok else None

        try:
            return wait_for(reached, WAIT_S, f"job {job_id} to reach {states}", interval=0.1)
        except TimeoutError:
            job = self.job(job_id)
            pytest.fail(
                f"job {job_id} is {job.state} (attempts {job.attempts}); logs:\n{self.workers.logs()}"
            )

    def holder(self, job: Job, processes: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        """The process whose Celery node name is in the job's worker id."""
        node = job.worker_id.split("/")[0] if job.worker_id else ""
        for process in processes:
            if process.args[-1] == node:  # type: ignore[index]
                return process
        raise AssertionError(f"no spawned worker holds {job.worker_id}")


@pytest.fixture
def service(
    tmp_path: Path, fresh_postgres_url: str, redis_url: str, worker_processes: WorkerProcesses
) -> Iterator[Service]:
    values = {
        "data_dir": tmp_path / "data",
        "database_url": fresh_postgres_url,
        "broker_url": redis_url,
        "job_lease_seconds": LEASE_S,
        "heartbeat_seconds": HEARTBEAT_S,
        "job_max_attempts": 3,
    }
    settings = Settings(**values)  # type: ignore[arg-type]
    upgrade_head(fresh_postgres_url)
    engine = make_engine(fresh_postgres_url)
    yield Service(settings, settings_env(**values), make_session_factory(engine), worker_processes)
    engine.dispose()


def test_probe_runs_to_succeeded(service: Service) -> None:
    service.workers.spawn(service.env, queues="inference")
    job = service.submit(seconds=0.5)
    done = service.wait(job.id, "succeeded", "failed")
    assert done.state == "succeeded", done.error
    assert done.attempts == 1 and done.progress == 1.0
    assert done.result is not None and done.result["slept_seconds"] >= 0.5
    assert done.progress_detail == {"step": 20, "steps": 20}
    assert (
        done.started_at is not None and done.finished_at is not None and done.finished_at >= done.started_at
    )


def test_failing_probe_records_its_message(service: Service) -> None:
    service.workers.spawn(service.env, queues="inference")
    job = service.submit(fail_message="asked to fail")
    done = service.wait(job.id, "succeeded", "failed")
    assert done.state == "failed" and done.error == "asked to fail" and done.attempts == 1


def test_training_jobs_do_not_block_inference(service: Service) -> None:
    service.workers.spawn(service.env, queues="inference")
    training = service.submit(queue="training")
    inference = service.submit()
    assert service.wait(inference.id, "succeeded").state == "succeeded"
    assert service.job(training.id).state == "queued"  # no worker consumes the training queue


def test_duplicate_delivery_runs_once(service: Service) -> None:
    first = service.workers.spawn(service.env, queues="inference", name="a")
    second = service.workers.spawn(service.env, queues="inference", name="b")
    job = service.submit(seconds=1.0)
    # The same id delivered again, as a broker redelivery would: both workers get a copy.
    make_celery(service.settings).send_task(TASK_NAME, args=[job.id], queue="inference")
    done = service.wait(job.id, "succeeded")
    assert done.attempts == 1

    def both_handled() -> bool:
        logs = service.workers.logs()
        return logs.count(f"job {job.id} (probe): claimed") == 1 and f"job {job.id}: not queued" in logs

    wait_for(both_handled, WAIT_S, "both deliveries to be handled")
    assert first.poll() is None and second.poll() is None


def test_killed_worker_is_replaced_after_lease(service: Service) -> None:
    processes = [
        service.workers.spawn(service.env, queues="inference", name="a"),
        service.workers.spawn(service.env, queues="inference", name="b"),
    ]
    job = service.submit(seconds=3.0)
    running = service.wait(job.id, "running", attempts=1)
    victim = service.holder(running, processes)
    WorkerProcesses.kill(victim)
    done = service.wait(job.id, "succeeded", "failed")
    assert done.state == "succeeded", done.error
    assert done.attempts == 2
    survivor = next(p for p in processes if p is not victim)
    assert done.result is not None and done.result["attempt"] == 2
    assert survivor.poll() is None


def test_worker_lost_too_often_fails_the_job(service: Service) -> None:
    processes = [
        service.workers.spawn(service.env, queues="inference", name=name) for name in ("a", "b", "c")
    ]
    job = service.submit(seconds=60.0)
    for attempt in (1, 2, 3):
        running = service.wait(job.id, "running", attempts=attempt)
        WorkerProcesses.kill(service.holder(running, processes))
    # No live worker ran the reconciler after the last kill; a fresh one does.
    service.workers.spawn(service.env, queues="training", name="d")
    failed = service.wait(job.id, "failed")
    assert failed.attempts == 3
    assert failed.error == "worker lost 3 times (lease expired); giving up"


def test_cancel_queued_and_running(service: Service) -> None:
    queued = service.submit(seconds=0.0)
    with service.sessions() as s:
        assert jobs.request_cancel(s, queued.id).state == "canceled"

    service.workers.spawn(service.env, queues="inference")
    running = service.submit(seconds=60.0)
    service.wait(running.id, "running")
    with service.sessions() as s:
        flagged = jobs.request_cancel(s, running.id)
    assert flagged.cancel_requested
    canceled = service.wait(running.id, "canceled", "succeeded", "failed")
    assert canceled.state == "canceled" and canceled.progress < 1.0
    # The canceled queued job's message was delivered too, and dropped without running.
    assert service.job(queued.id).attempts == 0
