"""Job use cases behind `/v1/jobs`.

The order in `submit_job` is the point: check the request, write the row as `queued`, commit, and only
then hand the id to the broker (Celery's "Database transactions" advice). A worker that picks the id up
at once always finds the row; a broker that is down leaves a job marked failed with the reason, never a
row that claims to be queued while nothing will ever run it.
"""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy.orm import Session

from api.errors import ServiceUnavailable
from api.quotas import enforce_job_quota
from api.schemas.jobs import JobCreate, JobStateName
from api.services.webhooks import check_webhook_url
from worker import jobs as job_states
from worker.celery_app import enqueue
from worker.db.models import Job
from worker.job_kinds import check_public_kind
from worker.settings import Settings

logger = logging.getLogger(__name__)

# Seconds a client should wait before retrying when the queue is full; a probe or a sampling batch
# clears in about this long.
QUEUE_FULL_RETRY_AFTER_S = 5


def submit_job(
    session: Session,
    celery: Celery,
    settings: Settings,
    *,
    request: JobCreate,
    owner_key: str | None,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    """Queue a job; returns it and whether it was created (False: an Idempotency-Key replay)."""
    if job_states.queue_depth(session) >= settings.max_queue_depth:
        raise ServiceUnavailable(
            f"the job queue is full ({settings.max_queue_depth} jobs waiting, STYLEGAN_MAX_QUEUE_DEPTH); "
            "retry later",
            headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)},
        )
    webhook_url = check_webhook_url(settings, request.webhook_url)
    enforce_job_quota(session, settings, owner_key)
    # Bad params, an unknown kind and a reused Idempotency-Key propagate (api/errors.py maps them).
    job, created = job_states.submit_job(
        session,
        kind=request.kind,
        params=request.params,
        owner_key=owner_key,
        idempotency_key=idempotency_key,
        max_attempts=settings.job_max_attempts,
        webhook_url=webhook_url,
    )
    if not created:
        return job, False

    try:
        enqueue(celery, job)
    except Exception as exc:
        logger.exception("could not enqueue job %s", job.id)
        job_states.fail_queued(session, job.id, f"could not reach the broker to queue this job: {exc}")
        raise ServiceUnavailable(
            f"the broker is unreachable, so job {job.id} was not queued and is marked failed; retry later",
            headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)},
        ) from None
    return job, True


def submit_public_job(
    session: Session,
    celery: Celery,
    settings: Settings,
    *,
    request: JobCreate,
    owner_key: str | None,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    """`POST /v1/jobs`: only the kinds marked public in JOB_KINDS. The others come through their own
    services, which check what their params schema cannot (and set fields a client must not)."""
    check_public_kind(request.kind)
    return submit_job(
        session, celery, settings, request=request, owner_key=owner_key, idempotency_key=idempotency_key
    )


def get_job(session: Session, job_id: str, *, owner_key: str | None) -> Job:
    return job_states.get_job(session, job_id, owner_key=owner_key)


def list_jobs(
    session: Session,
    *,
    owner_key: str | None,
    state: JobStateName | None,
    kind: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Job], int]:
    return job_states.list_jobs(
        session, owner_key=owner_key, state=state, kind=kind, limit=limit, offset=offset
    )


def cancel_job(session: Session, job_id: str, *, owner_key: str | None) -> Job:
    return job_states.request_cancel(session, job_id, owner_key=owner_key)
