"""Engines and sessions for SQLite (the embedded default) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

# Several processes (the API and each worker) write one SQLite file; a writer that finds the file locked
# waits this long before failing, which covers any single short transaction we run.
SQLITE_BUSY_TIMEOUT_MS = 15_000
# PostgreSQL: fail a connection attempt quickly so that /readyz answers instead of hanging.
POSTGRES_CONNECT_TIMEOUT_S = 5


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run while one process writes; synchronous=FULL fsyncs the WAL at every commit,
    # so a job marked succeeded stays succeeded after a power cut. Foreign keys are off by default.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`, configured for durable multi-process use.

    SQLite gets WAL, synchronous=FULL, foreign keys and a busy timeout on every connection, and its
    parent directory is created. PostgreSQL must use the psycopg 3 driver (`postgresql+psycopg://`).
    """
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            raise ValueError(
                f"PostgreSQL URLs must use psycopg 3 (postgresql+psycopg://), got {parsed.drivername}"
            )
        connect_args = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
        return sa.create_engine(parsed, connect_args=connect_args, pool_pre_ping=True, **kwargs)
    raise ValueError(f"unsupported database backend {parsed.get_backend_name()!r}; use sqlite or postgresql")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded rows usable after commit (jobs are returned to callers after it)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


_process_sessions: dict[tuple[int, str], sessionmaker[Session]] = {}
_process_lock = threading.Lock()


def process_sessions(url: str) -> sessionmaker[Session]:
    """The session factory of this process for `url`, made on first use after a fork: a pooled
    connection must never be shared between a prefork parent and its children."""
    key = (os.getpid(), url)
    with _process_lock:
        if key not in _process_sessions:
            _process_sessions[key] = make_session_factory(make_engine(url))
        return _process_sessions[key]


# A prefork pool forks a new child whenever one dies, from a parent whose threads (the lease reconciler,
# the presence heartbeat) use the database. A fork taken while such a thread is inside SQLite copies its
# in-process lock state into the child: SQLite then answers "database is locked" to the child for good
# (no other process holds a lock; the child believes its own phantom connection does), or the child
# blocks on a copied mutex. So those threads do their database work under this lock, and fork() waits
# for it (os.register_at_fork), which costs a fork at most one short round of queries.
_fork_guard = threading.RLock()
_fork_hooks_registered = False


@contextmanager
def fork_guard() -> Iterator[None]:
    """Hold off fork() in this process while the block uses the database."""
    global _fork_hooks_registered
    with _process_lock:
        if not _fork_hooks_registered:
            os.register_at_fork(
                before=_fork_guard.acquire,
                after_in_parent=_fork_guard.release,
                after_in_child=_fork_guard.release,  # the forking thread goes on in the child, holding it
            )
            _fork_hooks_registered = True
    with _fork_guard:
        yield
