"""The product over HTTP: model formats and per-owner dedupe, job events (SSE), webhooks.

- models: the architecture names of `gan.config` ("stylegan2", "stylegan3-t", "stylegan3-r"), the format
  the upload came in and the generator config; a file is stored once by sha256 but each owner gets
  their own row, so the uniqueness moves from sha256 to (owner, sha256).
- jobs.webhook_url: where a terminal state is POSTed.
- job_events: an append-only log per job (progress, preview, checkpoint, state) that the SSE stream
  replays from Last-Event-ID; the integer id orders events.
- webhook_deliveries: one row per job notification, retried with backoff until delivered or given up.
- datasets.job_id: the job that prepared a large upload.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.db.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OLD_ARCH = "architecture IN ('stylegan2', 'stylegan3')"
NEW_ARCH = "architecture IN ('stylegan2', 'stylegan3-t', 'stylegan3-r')"


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_constraint(op.f("ck_models_architecture"), type_="check")
        batch.create_check_constraint("architecture", NEW_ARCH)
        batch.drop_constraint(op.f("uq_models_sha256"), type_="unique")
        batch.add_column(sa.Column("format", sa.String(32), nullable=False, server_default="ours"))
        batch.add_column(sa.Column("config", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("num_params", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_index(
        "uq_models_owner_sha256", "models", [sa.text("coalesce(owner_key, '')"), "sha256"], unique=True
    )
    op.create_index("ix_models_sha256", "models", ["sha256"])

    # Plain ALTERs here: a batch copy of `jobs` on SQLite would lose its expression index.
    op.add_column("jobs", sa.Column("webhook_url", sa.Text(), nullable=True))

    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("job_id", sa.String(36), nullable=True))
        batch.create_foreign_key(
            op.f("fk_datasets_job_id_jobs"), "jobs", ["job_id"], ["id"], ondelete="SET NULL"
        )

    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_job_events"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_events_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_job_events_job_id_id", "job_events", ["job_id", "id"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_webhook_deliveries_job_id_jobs", ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'failed')", name=op.f("ck_webhook_deliveries_state")
        ),
    )
    op.create_index("ix_webhook_deliveries_job_id", "webhook_deliveries", ["job_id"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("job_events")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_constraint(op.f("fk_datasets_job_id_jobs"), type_="foreignkey")
        batch.drop_column("job_id")
    op.drop_column("jobs", "webhook_url")
    op.drop_index("ix_models_sha256", table_name="models")
    op.drop_index("uq_models_owner_sha256", table_name="models")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("num_params")
        batch.drop_column("config")
        batch.drop_column("format")
        batch.create_unique_constraint(op.f("uq_models_sha256"), ["sha256"])
        batch.drop_constraint(op.f("ck_models_architecture"), type_="check")
        batch.create_check_constraint("architecture", OLD_ARCH)
