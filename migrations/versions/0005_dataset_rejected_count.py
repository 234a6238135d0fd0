"""datasets.rejected_count: a dataset's rejection report keeps its first entries only (names cut), so
the number of rejected files is stored beside it (worker/tasks/dataset_prepare.py, REPORT_MAX_ENTRIES).

Rows written before keep their full report (nothing stored is dropped); their count is filled in, and
the API cuts what it sends of them as it does for new rows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("rejected_count", sa.Integer(), nullable=False, server_default="0"))
    datasets = sa.table("datasets", sa.column("id", sa.String), sa.column("rejected", sa.JSON))
    bind = op.get_bind()
    for dataset_id, rejected in bind.execute(sa.select(datasets.c.id, datasets.c.rejected)).all():
        if rejected:
            bind.execute(
                sa.text("UPDATE datasets SET rejected_count = :n WHERE id = :id"),
                {"n": len(rejected), "id": dataset_id},
            )


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("rejected_count")
