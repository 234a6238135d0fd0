"""directions: editing directions in a model's W (SeFa, GANSpace, a user's own), see worker/directions.py.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.db.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("model_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("layers", sa.String(20), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("sigma", sa.Float(), nullable=True),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("owner_key", sa.String(128), nullable=True),
        sa.Column("scope", sa.String(128), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("method IN ('sefa', 'ganspace', 'user')", name="ck_directions_method"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_directions_model_id_models", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_directions_job_id_jobs", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_directions"),
        sa.UniqueConstraint("model_id", "scope", "name", name="uq_directions_model_scope_name"),
    )
    op.create_index("ix_directions_model_id", "directions", ["model_id"])
    op.create_index("ix_directions_owner_key", "directions", ["owner_key"])


def downgrade() -> None:
    op.drop_index("ix_directions_owner_key", table_name="directions")
    op.drop_index("ix_directions_model_id", table_name="directions")
    op.drop_table("directions")
