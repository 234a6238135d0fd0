"""The Celery application: two queues, one task that carries a job id, and the lease reconciler.

Settings follow the Celery guide for long jobs (docs/userguide/optimizing.rst): acks_late so a message
is acknowledged only after its job finished, task_reject_on_worker_lost so a killed child puts the
message back, and prefetch 1 so a worker busy training does not hold sampling jobs it cannot start.
Messages are JSON and hold the job id only; the database row is the truth.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
from collections.abc import Iterable
from typing import Any

from celery import Celery
from kombu.entity import Queue
from sqlalchemy.pool import NullPool

from worker import jobs
from worker.db.models import Job, utcnow
from worker.db.session import fork_guard, make_engine, make_session_factory, process_sessions
from worker.inference.tasks import register_inference_tasks
from worker.settings import Settings
from worker.tasks.run import execute_job
from worker.tasks.webhook import register_webhook_task, relay_webhooks

log = logging.getLogger(__name__)

TASK_NAME = "stylegan.run_job"
# How often, at most, a worker looks for delivered messages past the visibility timeout (kombu's default
# sweep is every 100 s; a shorter timeout needs a sweep at least as often to mean anything).
MAX_RESTORE_INTERVAL_S = 10.0


def make_celery(settings: Settings) -> Celery:
    """The Celery app for these settings, with the `stylegan.run_job` task registered."""
    url = settings.resolved_broker_url()
    app = Celery("stylegan", broker=url, set_as_current=False)
    visibility = settings.broker_visibility_timeout_seconds
    transport_options: dict[str, Any] = {
        "visibility_timeout": visibility,
        # One sweep (a range read of a sorted set) per interval, not kombu's one per ten intervals.
        "unacked_restore_interval": min(MAX_RESTORE_INTERVAL_S, visibility / 4),
        "unacked_restore_throttle": 1,
    }
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


def lost_message_grace_seconds(settings: Settings) -> float:
    """How long a queued job may go without a message in the broker before it counts as lost: an API
    still inside `enqueue` (three quick retries, each waiting up to the broker timeout) is not lost."""
    return 3 * settings.broker_timeout_seconds


def _job_id_of(message: Any) -> str | None:
    """The job id a kombu Redis message carries, if it is a `stylegan.run_job` message (protocol 2:
    the body is base64 JSON `[args, kwargs, embed]`)."""
    try:
        if message["headers"]["task"] != TASK_NAME:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def broker_job_ids(celery_app: Celery, queues: Iterable[str]) -> set[str] | None:
    """Ids of the jobs that have a run_job message in the broker: waiting in one of `queues`, or
    delivered to a worker and not yet acknowledged. None when the broker is not Redis.

    Reads the lists and the unacked hash of kombu's Redis transport (each priority has its own list).
    The lists are read before the hash, so a message moving from one to the other while we look is
    seen in at least one unless the move falls between the two reads; the cost of that miss is one
    duplicate message, which the claim drops.
    """
    with celery_app.connection_for_read() as connection:
        channel = connection.default_channel
        if not hasattr(channel, "unacked_key"):
            return None
        client = channel.client
        payloads: list[Any] = []
        for queue in queues:
            for priority in channel.priority_steps:
                for raw in client.lrange(channel._q_for_pri(queue, priority), 0, -1):
                    payloads.append(json.loads(raw))
        for raw in client.hvals(channel.unacked_key):
            payloads.append(json.loads(raw)[0])  # [message, exchange, routing key]
    return {job_id for p in payloads if (job_id := _job_id_of(p)) is not None}


class Reconciler(threading.Thread):
    """Every `reconcile_seconds`, re-queues jobs whose lease ran out (their worker is gone) and jobs
    whose broker message is gone (the broker lost its data, or the API died between commit and enqueue).

    Each worker process runs one; the conditional UPDATEs make several reconcilers safe, and a message
    sent twice runs once (the claim drops the second). It uses unpooled connections so that no
    connection is open across a prefork fork.
    """

    def __init__(self, celery_app: Celery, settings: Settings) -> None:
        super().__init__(name="lease-reconciler", daemon=True)
        self.celery_app = celery_app
        self.settings = settings
        self.stopped = threading.Event()
        engine = make_engine(settings.effective_database_url, poolclass=NullPool)
        self.sessions = make_session_factory(engine)

    # Database work happens in short sessions under fork_guard() (see worker/db/session.py), and the
    # broker is called outside them, so a fork of a new pool child never waits on the broker.
    def reconcile_once(self) -> list[str]:
        with fork_guard(), self.sessions() as session:
            requeued = jobs.reconcile_expired_leases(session)
            lost = [jobs.get_job(session, job_id) for job_id in requeued]
        for job in lost:
            log.warning(
                "job %s: worker lost (lease expired); re-queued, attempt %d next", job.id, job.attempts + 1
            )
            enqueue(self.celery_app, job)
        requeued += self.resend_lost_messages()
        # The webhook outbox relay rides on the same loop (worker/webhooks.py).
        with fork_guard(), self.sessions() as session:
            relay_webhooks(session, self.celery_app, self.settings)
        return requeued

    def resend_lost_messages(self) -> list[str]:
        """Enqueue again every job queued for longer than the grace period with no message in the
        broker: the database holds the truth, so a broker that lost its data loses no job."""
        cutoff = utcnow() - dt.timedelta(seconds=lost_message_grace_seconds(self.settings))
        with fork_guard(), self.sessions() as session:
            waiting = jobs.queued_before(session, cutoff)
        if not waiting:
            return []
        present = broker_job_ids(self.celery_app, sorted({queue for _, queue in waiting}))
        if present is None:
            return []
        with fork_guard(), self.sessions() as session:
            # Re-read: a worker may have claimed one since; enqueue sends only for a queued job.
            missing = [jobs.get_job(session, job_id) for job_id, _ in waiting if job_id not in present]
        resent = []
        for job in missing:
            if enqueue(self.celery_app, job):
                log.warning("job %s: queued but not in the broker (lost message); sent again", job.id)
                resent.append(job.id)
        return resent

    def run(self) -> None:
        while not self.stopped.wait(self.settings.effective_reconcile_seconds):
            try:
                self.reconcile_once()
            except Exception:
                log.exception("lease reconciler round failed; retrying next round")

    def stop(self) -> None:
        self.stopped.set()
