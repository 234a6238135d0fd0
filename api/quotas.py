"""Per-key quotas, enforced only when API keys are configured (auth off means one trusted user).

- Active jobs: at most `quota_max_active_jobs` queued or running jobs per key. A request over it is
  429 with Retry-After: the limit frees itself as jobs finish, so waiting is the right response.
- Storage: the bytes of a key's models, datasets, job artifacts and training checkpoints together stay
  within `quota_max_storage_bytes`. An upload that would pass it is 413 (Content Too Large, RFC 9110
  §15.5.14), not 429: waiting does not free space, only deleting something does, and 413 tells the
  client that this content will not be accepted as is.

Both are counted in the database every API process shares, so replicas enforce one limit. On
PostgreSQL the job check first takes a transaction-scoped advisory lock on the key, held until the
caller commits its new row: two requests from one key, on one API process or two, are counted one after
the other and the limit is exact. The storage check counts without a lock, so two uploads racing from
one key can each pass it and overshoot by one upload; that is acceptable for a fairness limit, and
holding a lock across an upload of gigabytes would serialise all of a key's uploads. (SQLite is one
machine's embedded default: its writers are serialised by the file lock already.)

Sampling's per-key rate limit is a token bucket in api/ratelimit.py, not here.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.errors import ApiError
from worker.db.models import Artifact, Checkpoint, Dataset, Job, Model
from worker.jobs import JobState
from worker.settings import Settings

# Seconds a client over its job quota should wait before retrying: about what a short job (a sample
# batch, a probe, a mix grid) takes, so a polling client is not told to wait far longer than needed.
JOB_QUOTA_RETRY_AFTER_S = 10

_ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)


class JobQuotaExceeded(ApiError):
    status, title, slug = 429, "Too many active jobs", "job-quota-exceeded"


class StorageQuotaExceeded(ApiError):
    status, title, slug = 413, "Storage quota exceeded", "storage-quota-exceeded"


def active_jobs(session: Session, owner_key: str) -> int:
    """The key's jobs that are queued or running."""
    stmt = (
        sa.select(sa.func.count()).select_from(Job).where(Job.owner_key == owner_key, Job.state.in_(_ACTIVE))
    )
    return session.scalar(stmt) or 0


def enforce_job_quota(session: Session, settings: Settings, owner_key: str | None) -> None:
    """Raise JobQuotaExceeded (429, Retry-After) when this key already has its maximum of active jobs.

    Call it in every service that creates a job, before the row is written. No-op with auth off.
    """
    limit = settings.quota_max_active_jobs
    if owner_key is None or not settings.auth_enabled or limit is None:
        return
    _lock_key(session, owner_key)
    active = active_jobs(session, owner_key)
    if active >= limit:
        raise JobQuotaExceeded(
            f"this API key has {active} jobs queued or running, the most allowed at once "
            f"(STYLEGAN_QUOTA_MAX_ACTIVE_JOBS={limit}); wait for one to finish or cancel one",
            headers={"Retry-After": str(JOB_QUOTA_RETRY_AFTER_S)},
        )


def _lock_key(session: Session, owner_key: str) -> None:
    """Serialise this key's quota checks until the transaction ends (PostgreSQL only)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    # Advisory locks take a bigint: the first 8 bytes of the key's sha256 (a collision only makes two
    # keys wait for each other).
    lock_id = int.from_bytes(
        hashlib.sha256(f"job-quota:{owner_key}".encode()).digest()[:8], "big", signed=True
    )
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_id)))


def storage_used(session: Session, owner_key: str) -> int:
    """Bytes stored for this key: its models, datasets, artifacts and training checkpoints."""
    total = 0
    for column, owner in (
        (Model.size_bytes, Model.owner_key),
        (Dataset.size_bytes, Dataset.owner_key),
        (Artifact.size_bytes, Artifact.owner_key),
    ):
        total += (
            session.scalar(sa.select(sa.func.coalesce(sa.func.sum(column), 0)).where(owner == owner_key)) or 0
        )
    checkpoints = (
        sa.select(sa.func.coalesce(sa.func.sum(Checkpoint.size_bytes), 0))
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Job.owner_key == owner_key)
    )
    total += session.scalar(checkpoints) or 0
    return int(total)


def enforce_storage_quota(
    session: Session, settings: Settings, owner_key: str | None, incoming_bytes: int, *, field: str = "file"
) -> None:
    """Raise StorageQuotaExceeded (413) when storing `incoming_bytes` more would pass this key's quota.

    Call it in every service that stores an upload, once its size is known. No-op with auth off.
    """
    if incoming_bytes < 0:
        raise ValueError(f"incoming_bytes must be >= 0, got {incoming_bytes}")
    limit = settings.quota_max_storage_bytes
    if owner_key is None or not settings.auth_enabled or limit is None:
        return
    used = storage_used(session, owner_key)
    if used + incoming_bytes > limit:
        raise StorageQuotaExceeded(
            f"{field}: storing {incoming_bytes} more bytes would pass this API key's storage quota "
            f"({used} of {limit} bytes used, STYLEGAN_QUOTA_MAX_STORAGE_BYTES); delete models, datasets "
            "or jobs to free space"
        )
