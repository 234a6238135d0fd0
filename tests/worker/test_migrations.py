"""Alembic builds the schema from empty and takes it down again, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from worker.db.migrate import current_revision, downgrade, head_revision, upgrade_head
from worker.db.models import Base
from worker.db.session import make_engine

TABLES = {
    "jobs",
    "models",
    "datasets",
    "checkpoints",
    "artifacts",
    "job_events",
    "webhook_deliveries",
    "workers",
    "directions",
}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _round_trip(url: str) -> None:
    assert current_revision(url) is None
    upgrade_head(url)
    assert current_revision(url) == head_revision()
    assert _tables(url) == TABLES
    upgrade_head(url)  # a second upgrade is a no-op
    downgrade(url, "base")
    assert current_revision(url) is None
    assert _tables(url) == set()
    upgrade_head(url)
    assert _tables(url) == TABLES


def _schema_drift(url: str) -> list[object]:
    """Differences between the ORM rows and what the migrations built (expression indexes aside,
    which autogenerate cannot compare)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
    finally:
        engine.dispose()
    expression_indexes = ("uq_jobs_owner_idempotency", "uq_models_owner_sha256")
    return [d for d in diffs if not any(name in repr(d) for name in expression_indexes)]


def test_sqlite_round_trip(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    _round_trip(url)
    assert _schema_drift(url) == []
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


@pytest.mark.integration
def test_postgres_round_trip(fresh_postgres_url: str) -> None:
    _round_trip(fresh_postgres_url)
    assert _schema_drift(fresh_postgres_url) == []


@pytest.mark.integration
def test_postgres_idempotency_index_covers_null_owner(fresh_postgres_url: str) -> None:
    upgrade_head(fresh_postgres_url)
    engine = make_engine(fresh_postgres_url)
    insert = sa.text(
        "INSERT INTO jobs (id, kind, queue, state, cancel_requested, progress, progress_detail, params, "
        "created_at, updated_at, attempts, max_attempts, idempotency_key) VALUES (:id, 'probe', 'inference', "
        "'queued', false, 0, '{}', '{}', now(), now(), 0, 3, 'same-key')"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"id": "a"})
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(insert, {"id": "b"})
    engine.dispose()
