"""Database rows (SQLAlchemy 2 typed ORM).

These are rows, not wire formats or domain objects: the API's Pydantic schemas and `worker.jobs.JobState`
convert at the edge. The schema itself is built by the Alembic migrations in `migrations/`, never by
`create_all`; a test checks that the two agree.

Timestamps are stored as UTC and always come back timezone-aware (SQLite has no time zones, so
`UTCDateTime` attaches UTC on the way out and refuses naive values on the way in).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Constraint names follow one convention so that migrations can refer to them on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_STATES = ("queued", "running", "succeeded", "failed", "canceled")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC datetime")
        value = value.astimezone(dt.UTC)
        # SQLite stores text; drop the offset so that string comparisons (lease expiry) order correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        float: sa.Float(),
        dt.datetime: UTCDateTime(),
        dict[str, Any]: sa.JSON(),
        list[Any]: sa.JSON(),
    }


class Model(Base):
    """A generator that can be sampled: an uploaded or imported pickle, or a training result."""

    __tablename__ = "models"
    __table_args__ = (
        sa.CheckConstraint(
            "architecture IN ('stylegan2', 'stylegan3-t', 'stylegan3-r')", name="architecture"
        ),
        sa.CheckConstraint("resolution > 0 AND z_dim >= 0 AND w_dim > 0 AND c_dim >= 0", name="dims"),
        # A file is stored once by sha256, but each owner has their own row (and sees only that).
        sa.Index(
            "uq_models_owner_sha256",
            sa.func.coalesce(sa.column("owner_key"), ""),
            sa.column("sha256"),
            unique=True,
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(sa.String(200))
    architecture: Mapped[str] = mapped_column(sa.String(16))
    resolution: Mapped[int]
    img_channels: Mapped[int] = mapped_column(default=3)
    z_dim: Mapped[int]
    w_dim: Mapped[int]
    c_dim: Mapped[int]
    num_ws: Mapped[int]
    file_key: Mapped[str] = mapped_column(sa.String(500))
    sha256: Mapped[str] = mapped_column(sa.String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    # The format the file came in: "ours" (safetensors + JSON), "official-pkl" or "tf-pkl".
    format: Mapped[str] = mapped_column(sa.String(32), default="ours", server_default="ours")
    # gan.config.GeneratorConfig.to_dict() of the stored generator.
    config: Mapped[dict[str, Any] | None]
    num_params: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # Where it came from: "upload", "import:<url or file name>", "training:<job id>".
    source: Mapped[str] = mapped_column(sa.String(500))
    license_note: Mapped[str | None] = mapped_column(sa.Text)
    owner_key: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    job_id: Mapped[str | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    """A prepared image dataset (archive plus its label file) ready for training."""

    __tablename__ = "datasets"
    __table_args__ = (sa.CheckConstraint("image_count >= 0 AND resolution > 0", name="sizes"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(sa.String(200))
    file_key: Mapped[str] = mapped_column(sa.String(500))
    sha256: Mapped[str] = mapped_column(sa.String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    image_count: Mapped[int]
    resolution: Mapped[int]
    has_labels: Mapped[bool] = mapped_column(default=False)
    num_classes: Mapped[int | None]
    # Files left out while preparing, with the reason: [{"name": ..., "reason": ...}, ...], the first
    # REPORT_MAX_ENTRIES of them (worker/tasks/dataset_prepare.py), and how many there were in all.
    rejected: Mapped[list[Any]] = mapped_column(default=list)
    rejected_count: Mapped[int] = mapped_column(default=0, server_default="0")
    owner_key: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    # The job that prepared it, for uploads too large to prepare within the request.
    job_id: Mapped[str | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One unit of queued work; its `state` moves only through `worker.jobs`."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.CheckConstraint(f"state IN {JOB_STATES!r}", name="state"),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
        sa.CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts"),
        # NULL owners are distinct in a plain unique constraint on both backends, so with auth off two
        # requests could both create a job under one Idempotency-Key; the expression closes that gap.
        sa.Index(
            "uq_jobs_owner_idempotency",
            sa.func.coalesce(sa.column("owner_key"), ""),
            sa.column("idempotency_key"),
            unique=True,
        ),
        sa.Index("ix_jobs_state_lease", "state", "lease_expires_at"),
        sa.Index("ix_jobs_owner_created", "owner_key", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(sa.String(64))
    queue: Mapped[str] = mapped_column(sa.String(32))
    state: Mapped[str] = mapped_column(sa.String(16), default="queued")
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    progress: Mapped[float] = mapped_column(default=0.0)
    progress_detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    worker_id: Mapped[str | None] = mapped_column(sa.String(200))
    lease_expires_at: Mapped[dt.datetime | None]
    owner_key: Mapped[str | None] = mapped_column(sa.String(128))
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(200))
    # sha256 of the canonical request (kind, queue, params): a replayed key must carry the same request.
    request_hash: Mapped[str | None] = mapped_column(sa.String(64))
    # POSTed (HMAC-signed) when the job reaches a terminal state; see webhook_deliveries.
    webhook_url: Mapped[str | None] = mapped_column(sa.Text)


class JobEvent(Base):
    """An append-only log of what a job did (progress, preview, checkpoint, state), for the SSE stream.

    The integer id orders events and is the SSE event id, so a client resumes with Last-Event-ID.
    """

    __tablename__ = "job_events"
    __table_args__ = (sa.Index("ix_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(sa.String(32))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One notification of a job's terminal state, retried with backoff until delivered or given up."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (sa.CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="state"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(sa.Text)
    state: Mapped[str] = mapped_column(sa.String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    next_attempt_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[dt.datetime | None]


class Checkpoint(Base):
    """A snapshot written by a training job."""

    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kimg: Mapped[float]
    file_key: Mapped[str] = mapped_column(sa.String(500))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    """A file produced by a job (images, a grid, a video, a metrics report)."""

    __tablename__ = "artifacts"
    __table_args__ = (sa.CheckConstraint("size_bytes >= 0", name="size"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    name: Mapped[str] = mapped_column(sa.String(255))
    file_key: Mapped[str] = mapped_column(sa.String(500))
    content_type: Mapped[str] = mapped_column(sa.String(100))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    owner_key: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WorkerPresence(Base):
    """A running worker process, as it last reported itself (worker/presence.py).

    Each worker renews its row every heartbeat and deletes it on a clean stop; a row that has not been
    renewed for a few heartbeats belongs to a worker that died, and readers ignore it (`/readyz`,
    `GET /v1/workers`). The database rather than the broker holds it so that it works on every broker.
    """

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(sa.String(255), primary_key=True)  # the Celery node name
    hostname: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int]
    queues: Mapped[list[Any]]
    device: Mapped[str] = mapped_column(sa.String(100))
    concurrency: Mapped[int]
    # Storage keys of the generators the process holds loaded (inference workers).
    loaded_models: Mapped[list[Any]] = mapped_column(default=list)
    started_at: Mapped[dt.datetime]
    last_seen: Mapped[dt.datetime] = mapped_column(index=True)


class StoredDirection(Base):
    """A direction in a model's W (gan.editing.Direction): SeFa's, computed on first request and shared by
    everyone who can see the model (no owner); GANSpace's, made by a job of one key; or a key's own.

    `name` is the id users write in `edit=NAME:STRENGTH` (`sefa-coarse-0`, `ganspace-all-3`, `smile`),
    unique per model within one scope: the public one (`scope` "") or one owner's (`scope` = owner_key).
    """

    __tablename__ = "directions"
    __table_args__ = (
        sa.UniqueConstraint("model_id", "scope", "name", name="uq_directions_model_scope_name"),
        sa.CheckConstraint("method IN ('sefa', 'ganspace', 'user')", name="method"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    method: Mapped[str] = mapped_column(sa.String(16))
    layers: Mapped[str] = mapped_column(sa.String(20))
    rank: Mapped[int] = mapped_column(default=0)
    value: Mapped[float | None] = mapped_column()  # SeFa's eigenvalue, GANSpace's explained variance ratio
    sigma: Mapped[float | None] = mapped_column()  # GANSpace: the spread along it, an edit's unit
    vector: Mapped[bytes] = mapped_column(sa.LargeBinary)  # [w_dim] little-endian float32
    owner_key: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    scope: Mapped[str] = mapped_column(sa.String(128), default="")
    job_id: Mapped[str | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
