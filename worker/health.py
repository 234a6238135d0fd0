"""Readiness checks for /readyz: each returns (ok, detail) within a few seconds, never raises."""

from __future__ import annotations

import uuid

import redis
import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from kombu.connection import Connection

from worker.db.migrate import head_revision
from worker.db.session import make_engine, make_session_factory
from worker.job_kinds import QUEUES
from worker.presence import live_workers, queues_without_worker
from worker.settings import Settings
from worker.storage import make_storage


def check_database(settings: Settings, engine: sa.Engine | None = None) -> tuple[bool, str]:
    """The database answers and is migrated to the code's revision."""
    owned = engine is None
    engine = engine or make_engine(settings.effective_database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            at = MigrationContext.configure(conn).get_current_revision()
        head = head_revision()
        if at != head:
            return False, f"database at revision {at}, expected {head}; run `stylegan migrate`"
        return True, f"{engine.dialect.name} at revision {at}"
    except Exception as exc:
        return False, f"database unreachable: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        if owned:
            engine.dispose()


def check_broker(settings: Settings) -> tuple[bool, str]:
    """The broker accepts a connection (and, for Redis, answers PING)."""
    timeout = settings.broker_timeout_seconds
    try:
        url = settings.resolved_broker_url()
        if url.startswith(("redis://", "rediss://", "redis+socket://")):
            client = redis.Redis.from_url(
                url.replace("redis+socket://", "unix://"),
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            try:
                client.ping()
            finally:
                client.close()
        else:
            with Connection(url, connect_timeout=timeout) as conn:  # type: ignore[no-untyped-call]
                conn.ensure_connection(max_retries=1, timeout=timeout)
        return True, "broker answered"
    except Exception as exc:
        return (
            False,
            f"broker unreachable: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
        )


def check_storage(settings: Settings) -> tuple[bool, str]:
    """The storage accepts, returns and deletes a small file."""
    key = f"_health/{uuid.uuid4().hex}"
    try:
        storage = make_storage(settings)
        storage.put_bytes(key, b"ok")
        with storage.open(key) as f:
            if f.read() != b"ok":
                return False, "storage returned different bytes than were written"
        storage.delete(key)
        return True, "storage writable"
    except Exception as exc:
        return False, f"storage unusable: {type(exc).__name__}: {exc}"


def check_workers(settings: Settings, engine: sa.Engine | None = None) -> tuple[bool, str]:
    """Every queue has at least one live worker (worker/presence.py); the detail names the queue
    that has none, or how many workers serve each."""
    owned = engine is None
    engine = engine or make_engine(settings.effective_database_url, poolclass=sa.pool.NullPool)
    try:
        with make_session_factory(engine)() as session:
            workers = live_workers(session, settings)
        missing = queues_without_worker(workers)
        if missing:
            names = ", ".join(missing)
            return False, f"no live worker consumes the {names} queue{'s' if len(missing) > 1 else ''}"
        counts = {queue: sum(queue in w.queues for w in workers) for queue in QUEUES}
        return True, ", ".join(f"{queue}: {n} worker{'s' if n > 1 else ''}" for queue, n in counts.items())
    except Exception as exc:
        return False, f"workers unknown: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        if owned:
            engine.dispose()
