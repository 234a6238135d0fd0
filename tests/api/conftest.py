"""Apps for the API tests: each on its own migrated SQLite file (the embedded default's database).

Tests that need a broker or worker processes take the real PostgreSQL/Redis/worker fixtures from
tests/conftest.py; the ones here need neither, because nothing they send reaches the broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from worker.db.migrate import upgrade_head
from worker.settings import Settings

# A port nothing listens on: these apps never publish, and /readyz must fail fast if asked.
UNREACHABLE_BROKER = "redis://127.0.0.1:9/0"


def migrated_settings(data_dir: Path, /, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": data_dir, "broker_url": UNREACHABLE_BROKER, **overrides}
    settings = Settings(**values)
    upgrade_head(settings.effective_database_url)
    return settings


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(*, app: FastAPI | None = None, data_dir: Path | None = None, **overrides: Any) -> TestClient:
        if app is None:
            app = create_app(migrated_settings(data_dir or tmp_path / f"data{len(clients)}", **overrides))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def settings_in() -> Callable[..., Settings]:
    """`settings_in(data_dir, **overrides)`: settings on a freshly migrated SQLite file."""
    return migrated_settings


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
