"""Jobs as an explicit state machine: queued -> running -> succeeded | failed | canceled.

The database holds the truth and the broker only carries job ids. Every move is one conditional UPDATE
(`... WHERE id = :id AND state IN (<states allowed to move there>)`) whose row count says whether it
happened, so two workers that receive the same job id cannot both start it, and a late heartbeat cannot
revive a job the reconciler already took back.

A worker holds a running job under a lease (`worker_id`, `lease_expires_at`) that it renews while it
works. `worker_id` names one claim, not one process, so a job re-queued and claimed again by the same
process is still told apart from its earlier run. A lease that runs out means the worker is gone:
`reconcile_expired_leases` re-queues the job until `max_attempts` runs have been lost, then fails it.

All functions take a Session and commit before returning.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.db.models import Job, utcnow
from worker.events import add_event
from worker.job_kinds import queue_for, validate_params
from worker.webhooks import record_terminal


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL_STATES: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})

# The one table of legal moves. running -> queued is the reconciler taking a job back from a lost
# worker; queued -> failed lets a submitter fail a job it could not hand to the broker.
ALLOWED_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED, JobState.QUEUED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELED: frozenset(),
}


class JobError(Exception):
    """Base of the job errors the API maps to HTTP statuses."""


class JobNotFound(JobError, LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class IllegalTransition(JobError):
    """A move the state table does not allow, or one that lost a race to another move."""

    def __init__(self, job_id: str, current: str | None, target: JobState) -> None:
        super().__init__(f"job {job_id} cannot move from {current} to {target.value}")
        self.job_id = job_id
        self.current = current
        self.target = target


class IdempotencyConflict(JobError):
    """An Idempotency-Key was reused with a different request."""

    def __init__(self, idempotency_key: str, existing_job_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {idempotency_key!r} was already used for job {existing_job_id} "
            "with a different request"
        )
        self.idempotency_key = idempotency_key
        self.existing_job_id = existing_job_id


class LeaseLost(JobError):
    """The worker no longer holds the job (its lease expired and it was re-queued, or it was canceled)."""

    def __init__(self, job_id: str, worker_id: str, state: str | None) -> None:
        super().__init__(f"worker {worker_id} no longer holds job {job_id} (now {state})")
        self.job_id = job_id
        self.worker_id = worker_id
        self.state = state


def sources_of(target: JobState) -> frozenset[JobState]:
    """The states from which `target` may be entered, read off ALLOWED_TRANSITIONS."""
    return frozenset(src for src, targets in ALLOWED_TRANSITIONS.items() if target in targets)


def check_transition(current: JobState, target: JobState) -> None:
    """Raise IllegalTransition unless the table allows current -> target."""
    if target not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransition("?", current.value, target)


def _move(
    session: Session,
    job_id: str,
    target: JobState,
    *,
    only_from: Sequence[JobState] | None = None,
    where: Sequence[sa.ColumnElement[bool]] = (),
    values: Mapping[str, Any] | None = None,
) -> bool:
    """One conditional UPDATE into `target`; True when this call made the move."""
    allowed = sources_of(target)
    sources = allowed if only_from is None else allowed & frozenset(only_from)
    if only_from is not None and len(sources) != len(only_from):
        raise IllegalTransition(job_id, ",".join(sorted(s.value for s in only_from)), target)
    stmt = (
        sa.update(Job)
        .where(Job.id == job_id, Job.state.in_(sorted(s.value for s in sources)), *where)
        .values(state=target.value, updated_at=utcnow(), **(values or {}))
        .execution_options(synchronize_session=False)
    )
    moved = _updated_one(session, stmt)
    if moved:
        # The SSE log gets every transition in the same transaction as the move itself.
        error = (values or {}).get("error")
        add_event(
            session,
            job_id,
            "state",
            {"state": target.value, **({"error": error} if isinstance(error, str) else {})},
        )
        if target in TERMINAL_STATES:
            # Its webhook notification too (an outbox row; see worker/webhooks.py).
            record_terminal(session, job_id)
    session.commit()
    return moved


def _updated_one(session: Session, stmt: sa.Update) -> bool:
    """Run a conditional UPDATE by primary key; True when it matched the row."""
    result = cast("sa.CursorResult[Any]", session.execute(stmt))
    return result.rowcount == 1


def _reload(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id, populate_existing=True)


# --- submitting and reading --------------------------------------------------------------------------


def request_hash(kind: str, queue: str, params: Mapping[str, Any]) -> str:
    """sha256 of the canonical request, so a replayed Idempotency-Key can be checked against it."""
    canonical = json.dumps(
        {"kind": kind, "queue": queue, "params": params}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit_job(
    session: Session,
    *,
    kind: str,
    params: Mapping[str, Any],
    queue: str | None = None,
    owner_key: str | None = None,
    idempotency_key: str | None = None,
    max_attempts: int = 3,
    webhook_url: str | None = None,
) -> tuple[Job, bool]:
    """Like `create_job`, and also says whether the job is new (False: an idempotent replay).

    The params are checked and normalised by the job kind (`worker.job_kinds.validate_params`) so no job
    row can carry params its handler would refuse. `webhook_url` (already checked by the caller, see
    worker/net.py) is POSTed when the job ends (worker/webhooks.py).
    """
    clean = validate_params(kind, params)
    expected_queue = queue_for(kind, clean)
    if queue is not None and queue != expected_queue:
        raise ValueError(
            f"job kind {kind!r} with these params runs on queue {expected_queue!r}, not {queue!r}"
        )
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    digest = request_hash(kind, expected_queue, clean)

    if idempotency_key is not None:
        existing = _find_by_idempotency_key(session, owner_key, idempotency_key)
        if existing is not None:
            return _replay(existing, idempotency_key, digest), False

    job = Job(
        kind=kind,
        queue=expected_queue,
        state=JobState.QUEUED.value,
        params=clean,
        max_attempts=max_attempts,
        owner_key=owner_key,
        idempotency_key=idempotency_key,
        request_hash=digest if idempotency_key is not None else None,
        webhook_url=webhook_url,
    )
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        # Another request with the same key committed between our lookup and our insert.
        session.rollback()
        if idempotency_key is None:
            raise
        existing = _find_by_idempotency_key(session, owner_key, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, idempotency_key, digest), False
    return job, True


def create_job(
    session: Session,
    *,
    kind: str,
    params: Mapping[str, Any],
    queue: str | None = None,
    owner_key: str | None = None,
    idempotency_key: str | None = None,
    max_attempts: int = 3,
    webhook_url: str | None = None,
) -> Job:
    """Write a queued job and commit; enqueue it (`worker.celery_app.enqueue`) only after this returns.

    `queue` defaults to the kind's queue and must agree with it when given. With an `idempotency_key`,
    the same key and request returns the existing job; the same key with another request raises
    IdempotencyConflict. Raises `worker.job_kinds.InvalidJobParams` (a ValueError) for bad params.
    """
    job, _ = submit_job(
        session,
        kind=kind,
        params=params,
        queue=queue,
        owner_key=owner_key,
        idempotency_key=idempotency_key,
        max_attempts=max_attempts,
        webhook_url=webhook_url,
    )
    return job


def _find_by_idempotency_key(session: Session, owner_key: str | None, key: str) -> Job | None:
    owner = Job.owner_key.is_(None) if owner_key is None else Job.owner_key == owner_key
    return session.scalars(sa.select(Job).where(owner, Job.idempotency_key == key)).one_or_none()


def _replay(existing: Job, key: str, digest: str) -> Job:
    if existing.request_hash != digest:
        raise IdempotencyConflict(key, existing.id)
    return existing


def get_job(session: Session, job_id: str, *, owner_key: str | None = None) -> Job:
    """The job, re-read from the database; JobNotFound if absent or (with owner_key) someone else's."""
    job = _reload(session, job_id)
    if job is None or (owner_key is not None and job.owner_key != owner_key):
        raise JobNotFound(job_id)
    return job


def list_jobs(
    session: Session,
    *,
    owner_key: str | None,
    state: JobState | str | None = None,
    kind: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Job], int]:
    """One page of jobs, newest first, and the total that match. owner_key None means no owner filter
    (auth off); a key sees only its own jobs."""
    if limit < 1 or offset < 0:
        raise ValueError(f"limit must be >= 1 and offset >= 0, got limit={limit}, offset={offset}")
    filters: list[sa.ColumnElement[bool]] = []
    if owner_key is not None:
        filters.append(Job.owner_key == owner_key)
    if state is not None:
        filters.append(Job.state == JobState(state).value)
    if kind is not None:
        filters.append(Job.kind == kind)
    total = session.scalar(sa.select(sa.func.count()).select_from(Job).where(*filters)) or 0
    page = session.scalars(
        sa.select(Job).where(*filters).order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    ).all()
    return list(page), total


def queue_depth(session: Session, queue: str | None = None) -> int:
    """Jobs waiting (queued), on one queue or all; the API refuses new work past its limit."""
    filters = [Job.state == JobState.QUEUED.value]
    if queue is not None:
        filters.append(Job.queue == queue)
    return session.scalar(sa.select(sa.func.count()).select_from(Job).where(*filters)) or 0


def queued_before(session: Session, cutoff: dt.datetime) -> list[tuple[str, str]]:
    """(id, queue) of the jobs queued since before `cutoff`, oldest first: the ones whose broker message
    the reconciler checks for."""
    rows = session.execute(
        sa.select(Job.id, Job.queue)
        .where(Job.state == JobState.QUEUED.value, Job.updated_at < cutoff)
        .order_by(Job.updated_at)
    ).all()
    session.commit()
    return [(job_id, queue) for job_id, queue in rows]


# --- the worker side -----------------------------------------------------------------------------------


def claim(session: Session, job_id: str, worker_id: str, lease_seconds: float) -> Job | None:
    """queued -> running for `worker_id`, with a fresh lease; None when the job is not queued.

    None covers a duplicate delivery (already running under a live lease, or finished) and a job
    canceled while it waited, so the caller drops the message instead of running the job twice.
    """
    now = utcnow()
    moved = _move(
        session,
        job_id,
        JobState.RUNNING,
        values={
            "worker_id": worker_id,
            "lease_expires_at": now + dt.timedelta(seconds=lease_seconds),
            "attempts": Job.attempts + 1,
            "started_at": now,
            "progress": 0.0,
            "progress_detail": {},
        },
    )
    return _reload(session, job_id) if moved else None


def _held_by(worker_id: str) -> list[sa.ColumnElement[bool]]:
    return [Job.state == JobState.RUNNING.value, Job.worker_id == worker_id]


def heartbeat(session: Session, job_id: str, worker_id: str, lease_seconds: float) -> bool:
    """Renew the lease; False when this worker no longer holds the job (the work should stop)."""
    stmt = (
        sa.update(Job)
        .where(Job.id == job_id, *_held_by(worker_id))
        .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    renewed = _updated_one(session, stmt)
    session.commit()
    return renewed


def cancel_requested(session: Session, job_id: str) -> bool:
    """Whether someone asked the running job to stop."""
    return bool(session.scalar(sa.select(Job.cancel_requested).where(Job.id == job_id)))


def set_progress(
    session: Session, job_id: str, worker_id: str, progress: float, detail: Mapping[str, Any] | None = None
) -> None:
    """Record progress in [0, 1] and a free-form detail; LeaseLost if this worker lost the job."""
    if not (math.isfinite(progress) and 0.0 <= progress <= 1.0):
        raise ValueError(f"progress must be within [0, 1], got {progress}")
    stmt = (
        sa.update(Job)
        .where(Job.id == job_id, *_held_by(worker_id))
        .values(progress=progress, progress_detail=dict(detail or {}), updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    updated = _updated_one(session, stmt)
    session.commit()
    if not updated:
        raise _lease_lost(session, job_id, worker_id)


def _lease_lost(session: Session, job_id: str, worker_id: str) -> LeaseLost:
    job = _reload(session, job_id)
    return LeaseLost(job_id, worker_id, job.state if job is not None else None)


def _finish(
    session: Session, job_id: str, worker_id: str, target: JobState, values: Mapping[str, Any]
) -> Job:
    moved = _move(
        session,
        job_id,
        target,
        only_from=[JobState.RUNNING],
        where=[Job.worker_id == worker_id],
        values={"finished_at": utcnow(), "lease_expires_at": None, **values},
    )
    if not moved:
        raise _lease_lost(session, job_id, worker_id)
    job = _reload(session, job_id)
    assert job is not None
    return job


def complete(session: Session, job_id: str, worker_id: str, result: Mapping[str, Any] | None = None) -> Job:
    """running -> succeeded with the handler's result; LeaseLost if this worker lost the job."""
    return _finish(
        session, job_id, worker_id, JobState.SUCCEEDED, {"result": dict(result or {}), "progress": 1.0}
    )


def fail(session: Session, job_id: str, worker_id: str, error: str) -> Job:
    """running -> failed with a readable error; LeaseLost if this worker lost the job."""
    return _finish(session, job_id, worker_id, JobState.FAILED, {"error": error})


def mark_canceled(session: Session, job_id: str, worker_id: str) -> Job:
    """running -> canceled, once the running work has stopped at a cancel request."""
    return _finish(session, job_id, worker_id, JobState.CANCELED, {"error": "canceled on request"})


def fail_queued(session: Session, job_id: str, error: str) -> Job:
    """queued -> failed, for a submitter that could not hand the job to the broker.

    The job's Idempotency-Key is released in the same UPDATE: the client was told to retry (503), and
    a retry with the same key and body must queue a fresh job, not replay this one, which never ran.
    """
    if not _move(
        session,
        job_id,
        JobState.FAILED,
        only_from=[JobState.QUEUED],
        values={"error": error, "finished_at": utcnow(), "idempotency_key": None, "request_hash": None},
    ):
        job = get_job(session, job_id)
        raise IllegalTransition(job_id, job.state, JobState.FAILED)
    return get_job(session, job_id)


def request_cancel(session: Session, job_id: str, *, owner_key: str | None = None) -> Job:
    """Cancel a job: a queued job is canceled at once; a running one gets `cancel_requested`, which its
    work honours at its next check, and then becomes canceled. Canceling a canceled job is a no-op;
    a job that already succeeded or failed raises IllegalTransition."""
    job = get_job(session, job_id, owner_key=owner_key)
    now = utcnow()
    if _move(
        session,
        job_id,
        JobState.CANCELED,
        only_from=[JobState.QUEUED],
        values={"cancel_requested": True, "finished_at": now, "error": "canceled on request"},
    ):
        return get_job(session, job_id)
    flag = (
        sa.update(Job)
        .where(Job.id == job_id, Job.state == JobState.RUNNING.value)
        .values(cancel_requested=True, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    flagged = _updated_one(session, flag)
    session.commit()
    job = get_job(session, job_id)
    if not flagged and job.state != JobState.CANCELED:
        raise IllegalTransition(job_id, job.state, JobState.CANCELED)
    return job


def reconcile_expired_leases(session: Session, now: dt.datetime | None = None) -> list[str]:
    """Take running jobs whose lease ran out back from their lost workers.

    Each goes back to queued while it has attempts left (the caller must enqueue the returned ids),
    to canceled if a cancel was requested, and otherwise to failed with a readable error. The UPDATE
    repeats the expiry condition and the worker id, so a heartbeat that lands first keeps the job.
    """
    now = now or utcnow()
    expired = session.execute(
        sa.select(Job.id, Job.worker_id, Job.attempts, Job.max_attempts, Job.cancel_requested).where(
            Job.state == JobState.RUNNING.value, Job.lease_expires_at < now
        )
    ).all()
    session.commit()
    requeued: list[str] = []
    for job_id, worker_id, attempts, max_attempts, wants_cancel in expired:
        still_lost = [
            Job.state == JobState.RUNNING.value,
            Job.worker_id == worker_id,
            Job.lease_expires_at < now,
        ]
        released = {"worker_id": None, "lease_expires_at": None}
        if wants_cancel:
            _move(
                session,
                job_id,
                JobState.CANCELED,
                where=still_lost,
                values={**released, "finished_at": now, "error": "canceled on request (worker lost)"},
            )
        elif attempts < max_attempts:
            if _move(session, job_id, JobState.QUEUED, where=still_lost, values=released):
                requeued.append(job_id)
        else:
            runs = "once" if attempts == 1 else f"{attempts} times"
            _move(
                session,
                job_id,
                JobState.FAILED,
                where=still_lost,
                values={
                    **released,
                    "finished_at": now,
                    "error": f"worker lost {runs} (lease expired); giving up",
                },
            )
    return requeued
