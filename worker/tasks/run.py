"""Running one job: claim it, run its handler under a renewed lease, record the outcome.

This is the body of the Celery task, kept free of Celery so it reads (and can be called) on its own.
The broker may deliver a job id twice (a redelivery after a lost ack, or the reconciler's re-queue):
the claim is a conditional UPDATE, so exactly one delivery runs and the others are dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from sqlalchemy.orm import Session, sessionmaker

from gan.errors import GanError
from worker import jobs
from worker.db.models import Job
from worker.devices import device_for
from worker.settings import Settings
from worker.storage import make_storage
from worker.tasks import HANDLERS
from worker.tasks.context import JobAbandoned, JobCanceled, JobContext
from worker.tasks.probe import ProbeFailed

log = logging.getLogger(__name__)

Outcome = Literal["dropped", "succeeded", "failed", "canceled", "abandoned"]

# Errors whose message is written for the user; anything else is a bug and keeps its type name.
_USER_ERRORS: tuple[type[Exception], ...] = (GanError, ProbeFailed)


def claim_token(worker_name: str) -> str:
    """A worker id naming this one claim: the process, plus a nonce that tells two runs apart."""
    return f"{worker_name}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class _Heartbeat(threading.Thread):
    """Renews the lease every heartbeat_seconds and relays cancel requests to the handler."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings, ctx: JobContext, worker_id: str):
        super().__init__(name=f"heartbeat-{ctx.job_id}", daemon=True)
        self.sessions = sessions
        self.settings = settings
        self.ctx = ctx
        self.worker_id = worker_id
        self.stopped = threading.Event()

    def beat(self) -> bool:
        with self.sessions() as session:
            if not jobs.heartbeat(session, self.ctx.job_id, self.worker_id, self.settings.job_lease_seconds):
                self.ctx.signal_lost()
                return False
            if jobs.cancel_requested(session, self.ctx.job_id):
                self.ctx.signal_cancel()
        return True

    def run(self) -> None:
        while not self.stopped.wait(self.settings.heartbeat_seconds):
            try:
                if not self.beat():
                    log.warning("job %s: lease lost by %s", self.ctx.job_id, self.worker_id)
                    return
            except Exception:
                # A database blip: keep trying; the lease covers two missed beats (see Settings).
                log.exception("job %s: heartbeat failed", self.ctx.job_id)


def execute_job(
    settings: Settings, sessions: sessionmaker[Session], job_id: str, worker_name: str
) -> Outcome:
    """Run job `job_id` here if it can be claimed; return what became of it."""
    worker_id = claim_token(worker_name)
    with sessions() as session:
        job = jobs.claim(session, job_id, worker_id, settings.job_lease_seconds)
    if job is None:
        log.info("job %s: not queued (duplicate delivery or canceled); dropped", job_id)
        return "dropped"
    log.info("job %s (%s): claimed by %s, attempt %d", job_id, job.kind, worker_id, job.attempts)

    def report(progress: float, detail: Mapping[str, Any]) -> None:
        with sessions() as session:
            try:
                jobs.set_progress(session, job_id, worker_id, progress, detail)
            except jobs.LeaseLost:
                ctx.signal_lost()

    ctx = JobContext(
        job_id=job_id,
        attempt=job.attempts,
        settings=settings,
        sessions=sessions,
        storage=make_storage(settings),
        owner_key=job.owner_key,
        device=device_for(settings, job.queue),
        report_progress=report,
    )
    heartbeat = _Heartbeat(sessions, settings, ctx, worker_id)
    try:
        heartbeat.beat()  # picks up a cancel requested between claim and start
        heartbeat.start()
        return _run_handler(sessions, job, ctx, worker_id)
    finally:
        heartbeat.stopped.set()


def _run_handler(sessions: sessionmaker[Session], job: Job, ctx: JobContext, worker_id: str) -> Outcome:
    handler = HANDLERS.get(job.kind)
    try:
        if handler is None:
            raise GanError(f"job kind {job.kind!r} is not known to this worker (is it older than the API?)")
        result = handler(ctx, dict(job.params))
    except JobCanceled:
        return _record(sessions, job.id, worker_id, "canceled")
    except JobAbandoned:
        log.warning("job %s: stopped; another worker owns it now", job.id)
        return "abandoned"
    except Exception as exc:
        error = str(exc) if isinstance(exc, _USER_ERRORS) else f"{type(exc).__name__}: {exc}"
        log.exception("job %s failed", job.id)
        return _record(sessions, job.id, worker_id, "failed", error=error)
    return _record(sessions, job.id, worker_id, "succeeded", result=result)


def _record(
    sessions: sessionmaker[Session],
    job_id: str,
    worker_id: str,
    outcome: Literal["succeeded", "failed", "canceled"],
    *,
    result: Mapping[str, Any] | None = None,
    error: str = "",
) -> Outcome:
    with sessions() as session:
        try:
            if outcome == "succeeded":
                jobs.complete(session, job_id, worker_id, result)
            elif outcome == "failed":
                jobs.fail(session, job_id, worker_id, error)
            else:
                jobs.mark_canceled(session, job_id, worker_id)
        except jobs.LeaseLost as lost:
            # Our lease ran out while we worked and the job was re-queued: the new run decides.
            log.warning("job %s: finished as %s but %s", job_id, outcome, lost)
            return "abandoned"
    log.info("job %s: %s", job_id, outcome)
    return outcome
