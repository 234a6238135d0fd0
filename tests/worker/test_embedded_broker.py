"""The embedded default: SQLite plus the embedded Redis, nothing configured but a data directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.servers import WorkerProcesses, settings_env, wait_for
from worker import jobs
from worker.celery_app import enqueue, make_celery
from worker.db.migrate import upgrade_head
from worker.db.session import make_engine, make_session_factory
from worker.embedded import EmbeddedBroker, EmbeddedBrokerError, embedded_broker_url
from worker.settings import Settings

pytestmark = pytest.mark.integration


def test_queued_message_survives_broker_restart(tmp_path: Path, worker_processes: WorkerProcesses) -> None:
    data_dir = tmp_path / "data"
    with pytest.raises(EmbeddedBrokerError, match="STYLEGAN_BROKER_URL"):
        embedded_broker_url(data_dir)
    settings = Settings(data_dir=data_dir, job_lease_seconds=2, heartbeat_seconds=0.5)
    upgrade_head(settings.effective_database_url)
    sessions = make_session_factory(make_engine(settings.effective_database_url))

    broker = EmbeddedBroker(data_dir)
    url = broker.start()
    try:
        # A second start while it runs reuses the server and will not stop it.
        again = EmbeddedBroker(data_dir)
        assert again.start() == url and again.process is None
        again.stop()
        assert redis.Redis.from_url(url).ping()

        with sessions() as s:
            job = jobs.create_job(s, kind="probe", params={"seconds": 0.2})
        enqueue(make_celery(settings), job)
        assert redis.Redis.from_url(url).llen("inference") == 1

        broker.stop()
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
        assert broker.start() == url  # same port and password: earlier clients reconnect
        assert redis.Redis.from_url(url).llen("inference") == 1

        # A worker given only the data directory finds the embedded broker and runs the job.
        worker_processes.spawn(settings_env(data_dir=data_dir, job_lease_seconds=2, heartbeat_seconds=0.5))

        def finished() -> jobs.Job | None:
            with sessions() as s:
                current = jobs.get_job(s, job.id)
            return current if current.state in jobs.TERMINAL_STATES else None

        done = wait_for(finished, 60, "the job queued before the restart to finish")
        assert done.state == "succeeded", done.error
    finally:
        broker.stop()
