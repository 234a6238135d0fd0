"""Running a worker process: `stylegan worker` and `python -m worker` both end here."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from typing import Any, Literal

from celery.signals import worker_ready, worker_shutdown

from worker.celery_app import Reconciler, make_celery
from worker.db.migrate import current_revision, head_revision
from worker.devices import DeviceUnavailable, device_for, device_name
from worker.inference.engine import shared_cache
from worker.job_kinds import QUEUES
from worker.presence import Presence, WorkerInfo
from worker.settings import Settings

Pool = Literal["prefork", "threads"]


class WorkerSetupError(RuntimeError):
    """The worker cannot start with these arguments or this database."""


def default_hostname() -> str:
    # Celery node names must be unique per broker: two workers on one machine get distinct names.
    return f"stylegan-{os.getpid()}@{socket.gethostname()}"


def pool_for(queues: Sequence[str]) -> Pool:
    """The inference queue alone runs in threads: its synchronous sampling requests must share one
    process, where the micro-batcher groups them into one forward pass and the loaded models are kept
    (worker/inference/). Anything with training runs in prefork children, which a crash or a kill at
    the end of the grace period takes down without taking the worker with it."""
    return "threads" if list(queues) == ["inference"] else "prefork"


def worker_info(
    settings: Settings, hostname: str, queues: Sequence[str], concurrency: int, pool: Pool
) -> WorkerInfo:
    """What this worker reports in its presence row. Only a threads pool holds its models in this
    process (the inference worker's cache); prefork children load theirs out of the parent's sight."""
    try:
        device = device_for(settings, "inference" if "inference" in queues else "training")
    except DeviceUnavailable as exc:
        raise WorkerSetupError(str(exc)) from None
    loaded = shared_cache(settings).keys if pool == "threads" else list
    return WorkerInfo(
        name=hostname,
        queues=list(queues),
        device=device_name(device),
        concurrency=concurrency,
        loaded_models=loaded,
    )


def run_worker(
    settings: Settings,
    queues: Sequence[str],
    concurrency: int | None = None,
    hostname: str | None = None,
    pool: Pool | None = None,
) -> None:
    """Consume `queues` until stopped (SIGTERM or Ctrl-C finish the running job first; a second
    signal stops at once). Blocks. The database must already be migrated (`stylegan migrate`).

    `pool` defaults to `pool_for(queues)`: threads for the inference queue alone, else prefork.
    `concurrency` defaults to settings.effective_inference_concurrency threads, or 1 child process."""
    queues = list(queues)
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        raise WorkerSetupError(f"queues must be a non-empty subset of {', '.join(QUEUES)}; got {queues}")
    pool = pool or pool_for(queues)
    if concurrency is None:
        concurrency = settings.effective_inference_concurrency if pool == "threads" else 1
    if concurrency < 1:
        raise WorkerSetupError(f"concurrency must be at least 1, got {concurrency}")
    url = settings.effective_database_url
    at, head = current_revision(url), head_revision()
    if at != head:
        raise WorkerSetupError(f"database is at revision {at}, the code needs {head}: run `stylegan migrate`")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = make_celery(settings)
    reconciler = Reconciler(app, settings)
    hostname = hostname or default_hostname()
    presence = Presence(settings, worker_info(settings, hostname, queues, concurrency, pool))

    # Start the threads only once the pool's children exist, so they are not forked with them; and
    # report presence only once the worker consumes, so a listed worker really takes jobs.
    def start_threads(**_: Any) -> None:
        for thread in (reconciler, presence):
            if not thread.is_alive():
                thread.start()

    def stop_threads(**_: Any) -> None:
        reconciler.stop()
        presence.stop()

    worker_ready.connect(start_threads, weak=False)
    worker_shutdown.connect(stop_threads, weak=False)
    worker = app.Worker(
        hostname=hostname,
        queues=queues,
        concurrency=concurrency,
        pool=pool,
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
        stop_threads()
    if worker.exitcode:
        raise SystemExit(worker.exitcode)
