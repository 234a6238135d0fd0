"""The bundled demo model: registered at `stylegan serve` start so a new user can sample at once.

The file ships in the repository (worker/assets/demo/*.safetensors, our format). It is registered with
no owner and a `demo:` source, which is what makes it public: every key sees it, no key can delete it.
Registration is idempotent by sha256 (a restart finds the row and does nothing), and goes through the
same sandboxed import as an upload, although the file is ours, so there is one way in for every file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from gan.io.files import file_sha256
from worker.db.models import Model
from worker.model_import import ImportLimits, find_model, register_model
from worker.storage import Storage

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).with_name("assets") / "demo"
DEMO_SOURCE_PREFIX = "demo:"


def bundled_demo_path(directory: Path = DEMO_DIR) -> Path | None:
    """The demo file shipped with the code, or None when there is none (a checkout without it)."""
    found = sorted(directory.glob("*.safetensors"))
    if len(found) > 1:
        log.warning("several demo files in %s; registering %s", directory, found[0].name)
    return found[0] if found else None


def is_demo(model: Model) -> bool:
    return model.owner_key is None and model.source.startswith(DEMO_SOURCE_PREFIX)


def demo_clause() -> sa.ColumnElement[bool]:
    """SQL for `is_demo`, for listing queries."""
    return sa.and_(Model.owner_key.is_(None), Model.source.startswith(DEMO_SOURCE_PREFIX))


def ensure_demo_model(
    session_factory: sessionmaker[Session],
    storage: Storage,
    path: Path | None,
    *,
    scratch: Path,
    limits: ImportLimits | None = None,
) -> Model | None:
    """Register the demo file at `path` unless it is already; None when `path` is None or absent."""
    if path is None or not path.is_file():
        return None
    sha256 = file_sha256(path)
    with session_factory() as session:
        existing = find_model(session, None, sha256)
        if existing is not None:
            return existing
        scratch.mkdir(parents=True, exist_ok=True)
        model, created = register_model(
            session,
            storage,
            src=path,
            sha256=sha256,
            owner_key=None,
            name=f"demo ({path.stem})",
            source=f"{DEMO_SOURCE_PREFIX}{path.name}",
            limits=limits or ImportLimits(),
            scratch=scratch,
        )
    if created:
        log.info("registered the demo model %s (%s)", model.id, path.name)
    return model
