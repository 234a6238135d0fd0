"""The two stacks the fault tests run on, each with real servers and a way to break them.

`embedded`: the SQLite file and the embedded Redis (append-only) under one data directory, as
`stylegan serve` runs with no settings. `postgres`: a throwaway PostgreSQL database and a Redis server
without persistence, as a scaled-out deployment runs. Both give an in-process app (TestClient) on the
same settings the spawned workers get.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from tests.servers import PostgresServer, RedisServer, WorkerProcesses, settings_env
from worker.db.migrate import upgrade_head
from worker.db.models import JobEvent
from worker.db.session import make_engine, make_session_factory
from worker.embedded import EmbeddedBroker
from worker.settings import Settings

# Short leases so that a lost worker is noticed within seconds, and a short broker timeout so that the
# reconciler's grace for a missing message (3 x the timeout) is 3 s.
FAST: dict[str, Any] = {
    "job_lease_seconds": 2.0,
    "heartbeat_seconds": 0.2,
    "reconcile_seconds": 0.5,
    "broker_timeout_seconds": 1.0,
}


@dataclass
class Stack:
    kind: str
    values: dict[str, Any]
    workers: WorkerProcesses
    lose_broker_data: Callable[[], None]
    clients: list[TestClient] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return settings_env(**self.values)

    @property
    def settings(self) -> Settings:
        return Settings(**self.values)

    def client(self, **overrides: Any) -> TestClient:
        client = TestClient(
            create_app(Settings(**{**self.values, **overrides})), raise_server_exceptions=False
        )
        client.__enter__()
        self.clients.append(client)
        return client

    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(make_engine(self.settings.effective_database_url))

    def spawn(self, queues: str, name: str | None = None, **overrides: Any) -> subprocess.Popen[bytes]:
        return self.workers.spawn(settings_env(**{**self.values, **overrides}), queues=queues, name=name)


def runs_of(sessions: sessionmaker[Session], job_id: str) -> int:
    """How many times the job was started: its `running` state events (one per claim)."""
    with sessions() as session:
        events = session.scalars(
            sa.select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "state")
        ).all()
    return sum(1 for e in events if e.data.get("state") == "running")


def _restart_redis(server: RedisServer) -> None:
    """SIGKILL the Redis server (no persistence: its data is gone) and start an empty one on the port."""
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    server.start()


def _restart_embedded(broker: EmbeddedBroker) -> None:
    """SIGKILL the embedded Redis and delete its append-only file: a broker that lost its disk."""
    assert broker.process is not None
    broker.process.send_signal(signal.SIGKILL)
    broker.process.wait(10)
    for aof in broker.dir.glob("appendonly*"):
        if aof.is_dir():
            for part in aof.iterdir():
                part.unlink()
        else:
            aof.unlink()
    broker.process = None
    broker.start()  # the same port and password (broker.json), so clients reconnect on their own


@pytest.fixture(params=["embedded", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    data_dir = tmp_path / "data"
    logs = tmp_path / "logs"
    logs.mkdir()
    workers = WorkerProcesses(logs)
    with contextlib.ExitStack() as cleanup:
        if request.param == "embedded":
            broker = EmbeddedBroker(data_dir)
            broker.start()
            cleanup.callback(broker.stop)
            values: dict[str, Any] = {"data_dir": data_dir, **FAST}
            lose: Callable[[], None] = lambda: _restart_embedded(broker)  # noqa: E731
        else:
            postgres: PostgresServer = request.getfixturevalue("postgres_server")
            redis = RedisServer().start()  # its own: this test may kill it
            cleanup.callback(redis.stop)
            values = {
                "data_dir": data_dir,
                "database_url": postgres.create_database(),
                "broker_url": redis.url,
                **FAST,
            }
            lose = lambda: _restart_redis(redis)  # noqa: E731
        upgrade_head(Settings(**values).effective_database_url)
        built = Stack(request.param, values, workers, lose)
        try:
            yield built
        finally:
            for client in built.clients:
                client.__exit__(None, None, None)
            workers.stop_all()
            print(workers.logs()[-6000:])
