"""The Celery application: two queues, one task that carries a job id, and the lease reconciler.

Settings follow the Celery guide for long jobs (docs/userguide/optimizing.rst): acks_late so a message
is acknowledged only after its job finished, task_reject_on_worker_lost so a killed child puts the
message back, and prefetch 1 so a worker busy training does not hold sampling jobs it cannot start.
Messages are JSON and hold the job id only; the database row is the truth.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery
from kombu.entity import Queue
from sqlalchemy.pool import NullPool

from worker import jobs
from worker.db.models import Job
from worker.db.session import make_engine, make_session_factory, process_sessions
from worker.inference.tasks import register_inference_tasks
from worker.settings import Settings
from worker.tasks.run import execute_job
from worker.tasks.webhook import register_webhook_task, relay_webhooks

log = logging.getLogger(__name__)

TASK_NAME = "stylegan.run_job"
# How long Redis keeps a delivered, unacknowledged message before handing it to another worker. Jobs
# lost with their worker are re-queued by the lease reconciler long before this, and a redelivered
# duplicate is dropped at the claim, so this is a backstop; an hour keeps redelivery noise rare.
VISIBILITY_TIMEOUT_S = 3600


def make_celery(settings: Settings) -> Celery:
    """The Celery app for these settings, with the `stylegan.run_job` task registered."""
    url = settings.resolved_broker_url()
    app = Celery("stylegan", broker=url, set_as_current=False)
    transport_options: dict[str, Any] = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    if url.startswith(("redis", "rediss")):
        transport_options |= {
            "socket_timeout": settings.broker_timeout_seconds,
            "socket_connect_timeout": settings.broker_timeout_seconds,
        }
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=(Queue("inference"), Queue("training")),  # type: ignore[no-untyped-call]
        task_default_queue="inference",
        task_create_missing_queues=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=settings.broker_timeout_seconds,
        broker_transport_options=transport_options,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )

    # shared=False: Celery otherwise adds a decorated task to every app made later in the process, and a
    # later app (another settings object: tests, or API and worker in one process) may run an earlier
    # app's closure, with that app's settings.
    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        shared=False,
    )
    def run_job(self: Any, job_id: str) -> str:
        worker_name = self.request.hostname or "worker"
        return execute_job(settings, process_sessions(settings.effective_database_url), job_id, worker_name)

    register_webhook_task(app, settings)
    # Synchronous sampling (worker/inference/): `stylegan.render`, with its own result backend.
    register_inference_tasks(app, settings)
    return app


def enqueue(celery_app: Celery, job: Job) -> bool:
    """Send the job's id to its queue; call only after the job row is committed.

    Returns False (and sends nothing) when the job is no longer queued, e.g. an idempotent replay of a
    job that already runs. Raises kombu's OperationalError when the broker cannot be reached after a
    few quick retries, so that the caller can answer 503 (and fail the job with `jobs.fail_queued`).
    """
    if job.state != jobs.JobState.QUEUED:
        return False
    celery_app.send_task(
        TASK_NAME,
        args=[job.id],
        queue=job.queue,
        retry=True,
        retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
    )
    return True


class Reconciler(threading.Thread):
    """Every `reconcile_seconds`, re-queues jobs whose lease ran out (their worker is gone).

    Each worker process runs one; the conditional UPDATEs make several reconcilers safe. It uses
    unpooled connections so that no connection is open across a prefork fork.
    """

    def __init__(self, celery_app: Celery, settings: Settings) -> None:
        super().__init__(name="lease-reconciler", daemon=True)
        self.celery_app = celery_app
        self.settings = settings
        self.stopped = threading.Event()
        engine = make_engine(settings.effective_database_url, poolclass=NullPool)
        self.sessions = make_session_factory(engine)

    def reconcile_once(self) -> list[str]:
        with self.sessions() as session:
            requeued = jobs.reconcile_expired_leases(session)
            for job_id in requeued:
                job = jobs.get_job(session, job_id)
                log.warning(
                    "job %s: worker lost (lease expired); re-queued, attempt %d next",
                    job_id,
                    job.attempts + 1,
                )
                enqueue(self.celery_app, job)
            # The webhook outbox relay rides on the same loop (worker/webhooks.py).
            relay_webhooks(session, self.celery_app, self.settings)
        return requeued

    def run(self) -> None:
        while not self.stopped.wait(self.settings.effective_reconcile_seconds):
            try:
                self.reconcile_once()
            except Exception:
                log.exception("lease reconciler round failed; retrying next round")

    def stop(self) -> None:
        self.stopped.set()
