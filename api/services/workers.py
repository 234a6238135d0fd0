"""The live workers, as `GET /v1/workers` shows them to one caller."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.schemas.workers import WorkerList, worker_out
from worker.db.models import Model
from worker.db.queries import visible_to
from worker.presence import live_workers
from worker.settings import Settings


def list_workers(session: Session, settings: Settings, owner_key: str | None) -> WorkerList:
    """Workers report the storage keys of the files they hold; each is shown as the ids of the models
    the caller may see that use that file (a file shared by two keys' uploads names only the caller's)."""
    workers = live_workers(session, settings)
    file_keys = {key for worker in workers for key in worker.loaded_models}
    ids_by_file: defaultdict[str, list[str]] = defaultdict(list)
    if file_keys:
        rows = session.execute(
            sa.select(Model.file_key, Model.id)
            .where(Model.file_key.in_(file_keys), *visible_to(Model, owner_key))
            .order_by(Model.created_at)
        )
        for file_key, model_id in rows:
            ids_by_file[file_key].append(model_id)
    return WorkerList(
        items=[
            worker_out(worker, [model_id for key in worker.loaded_models for model_id in ids_by_file[key]])
            for worker in workers
        ]
    )
