"""Which workers are alive: each worker process renews a `workers` row every heartbeat.

A queue with no live consumer is the failure a person meets first (jobs wait forever, sampling times
out), and neither the broker nor the database says so by itself. So every worker reports its queues,
device and loaded models on the heartbeat it already keeps for job leases, and deletes its row when it
stops cleanly. A worker that dies without stopping stops renewing, and readers treat a row older than
`liveness_window(settings)` as gone; the next live worker's heartbeat prunes such rows for good.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from worker.db.models import WorkerPresence, utcnow
from worker.db.session import fork_guard, make_engine, make_session_factory
from worker.job_kinds import QUEUES
from worker.settings import Settings

log = logging.getLogger(__name__)

# Heartbeats a worker may miss before it counts as gone: one late beat (a busy database, a long
# garbage collection) must not flap readiness, and three keep the default (10 s) within 30 s.
MISSED_BEATS = 2.5
# Rows of dead workers stay this many windows (someone looking at the table sees what died and when),
# then a live worker's beat deletes them.
PRUNE_WINDOWS = 20


def liveness_window(settings: Settings) -> dt.timedelta:
    return dt.timedelta(seconds=MISSED_BEATS * settings.heartbeat_seconds)


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker says about itself; `loaded_models` is asked again at every beat."""

    name: str
    queues: Sequence[str]
    device: str
    concurrency: int
    loaded_models: Callable[[], list[str]] = list
    hostname: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


def beat(session: Session, info: WorkerInfo, started_at: dt.datetime, settings: Settings) -> None:
    """Insert or renew this worker's row, and prune the rows of workers long gone. One transaction."""
    now = utcnow()
    values = {
        "hostname": info.hostname,
        "pid": info.pid,
        "queues": list(info.queues),
        "device": info.device,
        "concurrency": info.concurrency,
        "loaded_models": info.loaded_models(),
        "started_at": started_at,
        "last_seen": now,
    }
    renewed = session.execute(
        sa.update(WorkerPresence).where(WorkerPresence.name == info.name).values(**values)
    )
    if renewed.rowcount == 0:  # type: ignore[attr-defined]
        session.add(WorkerPresence(name=info.name, **values))
    cutoff = now - PRUNE_WINDOWS * liveness_window(settings)
    session.execute(sa.delete(WorkerPresence).where(WorkerPresence.last_seen < cutoff))
    session.commit()


def forget(session: Session, name: str) -> None:
    session.execute(sa.delete(WorkerPresence).where(WorkerPresence.name == name))
    session.commit()


def live_workers(
    session: Session, settings: Settings, now: dt.datetime | None = None
) -> list[WorkerPresence]:
    """Workers that renewed their row within the liveness window, by name."""
    cutoff = (now or utcnow()) - liveness_window(settings)
    rows = session.scalars(
        sa.select(WorkerPresence).where(WorkerPresence.last_seen >= cutoff).order_by(WorkerPresence.name)
    )
    return list(rows)


def queues_without_worker(workers: Sequence[WorkerPresence]) -> list[str]:
    """The queues that no live worker consumes, in QUEUES order."""
    served = {queue for worker in workers for queue in worker.queues}
    return [queue for queue in QUEUES if queue not in served]


class Presence(threading.Thread):
    """Renews this worker's row every heartbeat until stopped; then deletes it.

    Started once the worker consumes (Celery's worker_ready), so that a listed worker really takes
    jobs. Unpooled connections, like the lease reconciler: nothing stays open across a prefork fork.
    """

    def __init__(self, settings: Settings, info: WorkerInfo) -> None:
        super().__init__(name="worker-presence", daemon=True)
        self.settings = settings
        self.info = info
        self.started_at = utcnow()
        self.stopped = threading.Event()
        self.sessions: sessionmaker[Session] = make_session_factory(
            make_engine(settings.effective_database_url, poolclass=NullPool)
        )

    def beat_once(self) -> None:
        with fork_guard(), self.sessions() as session:
            beat(session, self.info, self.started_at, self.settings)

    def run(self) -> None:
        while True:
            try:
                self.beat_once()
            except Exception:
                log.exception("worker presence: heartbeat failed; retrying next beat")
            if self.stopped.wait(self.settings.heartbeat_seconds):
                break
        try:
            with fork_guard(), self.sessions() as session:
                forget(session, self.info.name)
        except Exception:
            log.exception("worker presence: could not remove this worker's row; it expires by itself")

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout)


class QueueWatch:
    """Whether a queue has a live worker, asked often (before each sampling request) and answered from
    the database at most once per `ttl_s`: next to heartbeats of seconds, a second-old answer is as
    good as a fresh one, and it keeps the check off the hot path."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings, ttl_s: float = 1.0) -> None:
        self.sessions = sessions
        self.settings = settings
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._served: frozenset[str] = frozenset()
        self._checked_at = float("-inf")

    def has_worker(self, queue: str) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at >= self.ttl_s:
                with self.sessions() as session:
                    workers = live_workers(session, self.settings)
                self._served = frozenset(q for worker in workers for q in worker.queues)
                self._checked_at = now
            return queue in self._served
