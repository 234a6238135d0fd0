"""Running a worker process: `stylegan worker` and `python -m worker` both end here."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from worker.celery_app import Reconciler, make_celery
from worker.db.migrate import current_revision, head_revision
from worker.jobs import QUEUES
from worker.settings import Settings


class WorkerSetupError(RuntimeError):
    """The worker cannot start with these arguments or this database."""


def default_hostname() -> str:
    # Celery node names must be unique per broker: two workers on one machine get distinct names.
    return f"stylegan-{os.getpid()}@{socket.gethostname()}"


def run_worker(
    settings: Settings, queues: Sequence[str], concurrency: int = 1, hostname: str | None = None
) -> None:
    """Consume `queues` until stopped (SIGTERM or Ctrl-C finish the running job first; a second
    signal stops at once). Blocks. The database must already be migrated (`stylegan migrate`)."""
    queues = list(queues)
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        raise WorkerSetupError(f"queues must be a non-empty subset of {', '.join(QUEUES)}; got {queues}")
    if concurrency < 1:
        raise WorkerSetupError(f"concurrency must be at least 1, got {concurrency}")
    url = settings.effective_database_url
    at, head = current_revision(url), head_revision()
    if at != head:
        raise WorkerSetupError(f"database is at revision {at}, the code needs {head}: run `stylegan migrate`")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = make_celery(settings)
    reconciler = Reconciler(app, settings)

    # Start the reconciler thread only once the pool's children exist, so they are not forked with it.
    def start_reconciler(**_: Any) -> None:
        if not reconciler.is_alive():
            reconciler.start()

    def stop_reconciler(**_: Any) -> None:
        reconciler.stop()

    worker_ready.connect(start_reconciler, weak=False)
    worker_shutdown.connect(stop_reconciler, weak=False)
    worker = app.Worker(
        hostname=hostname or default_hostname(),
        queues=queues,
        concurrency=concurrency,
        pool="prefork",
        loglevel="INFO",
        # No mingle/gossip/heartbeat events: workers share nothing but the broker and the database,
        # and mingle alone adds a second or more to every start.
        without_mingle=True,
        without_gossip=True,
        without_heartbeat=True,
    )
    try:
        worker.start()
    finally:
        reconciler.stop()
    if worker.exitcode:
        raise SystemExit(worker.exitcode)
