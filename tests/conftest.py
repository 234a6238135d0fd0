"""Shared fixtures that bring up real servers (see tests/servers.py). They fail, never skip, when a
server cannot start: the integration tests must not pass without having run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import PostgresServer, RedisServer, S3Server, ServerStartError, WorkerProcesses


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        try:
            server.start()
        except (ServerStartError, OSError, TimeoutError) as exc:
            pytest.fail(f"could not start a throwaway PostgreSQL: {exc}", pytrace=False)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """The admin URL of the session's PostgreSQL (database `postgres`); tests that write take
    `fresh_postgres_url` instead."""
    return postgres_server.admin_url


@pytest.fixture
def fresh_postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database for this test (CREATE DATABASE takes a few ms)."""
    return postgres_server.create_database()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        try:
            server.start()
        except (ServerStartError, OSError, TimeoutError) as exc:
            pytest.fail(f"could not start a throwaway redis-server: {exc}", pytrace=False)
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test so no message from an earlier test is delivered."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    try:
        try:
            server.start()
        except (ServerStartError, OSError, TimeoutError) as exc:
            pytest.fail(f"could not start moto's S3 server: {exc}", pytrace=False)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The AWS variables for the session's S3 server, set in this process too; returns them."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server.env


@pytest.fixture
def worker_processes(tmp_path: Path) -> Iterator[WorkerProcesses]:
    """Spawn real worker processes with `.spawn(env, queues)`; all are stopped at teardown and their
    logs printed (pytest shows them when the test failed)."""
    log_dir = tmp_path / "worker-logs"
    log_dir.mkdir()
    workers = WorkerProcesses(log_dir)
    try:
        yield workers
    finally:
        workers.stop_all()
        print(workers.logs())
