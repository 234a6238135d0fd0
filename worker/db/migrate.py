"""Schema migrations (Alembic), run in code so that `stylegan serve`/`migrate` and tests share one path.

The scripts live in `migrations/` at the repository root, next to the `worker` package; the schema is
only ever built by them (never `create_all`), so that every deployment is at a known revision.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from worker.db.session import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def _config() -> Config:
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise FileNotFoundError(
            f"Alembic scripts not found at {MIGRATIONS_DIR}; the service must run from a source checkout "
            "or an image that copies migrations/ next to the worker package"
        )
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def upgrade_head(url: str) -> None:
    """Bring the database at `url` to the newest revision (a no-op when it is already there)."""
    _run(url, lambda cfg: command.upgrade(cfg, "head"))


def downgrade(url: str, revision: str = "base") -> None:
    """Step the database at `url` down to `revision` ("base" removes every table we created)."""
    _run(url, lambda cfg: command.downgrade(cfg, revision))


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None for an empty (never migrated) database."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest revision the scripts define."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "migrations/versions holds no revision"
    return head


def _run(url: str, action: Callable[[Config], object]) -> None:
    cfg = _config()
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            action(cfg)
    finally:
        engine.dispose()
