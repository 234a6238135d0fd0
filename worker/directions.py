"""A model's editing directions in the database: the one place that stores, finds and resolves them, for
the API (listing, `edit=` on every sampling route) and the jobs (GANSpace, edit grids, videos).

Who sees which direction: SeFa's are a function of the model's weights, computed once and stored
without an owner, so everyone who can see the model shares them. GANSpace's and a user's own belong to
the key that made them (`owner_key`); another key cannot list or use them. Each stored row is a
`gan.editing.Direction` plus that ownership.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gan.editing import Direction, Edit, Method, parse_edit
from gan.editing import resolve_edits as gan_resolve_edits
from worker.db.models import StoredDirection
from worker.db.queries import visible_to

# SeFa directions kept per (model, layer range): a person slides a handful; a script asking for more
# than this many wants the eigendecomposition itself, which `stylegan directions` writes.
SEFA_STORED = 64
_METHODS: dict[str, Method] = {"sefa": "sefa", "ganspace": "ganspace", "user": "user"}


def to_direction(row: StoredDirection) -> Direction:
    return Direction(
        id=row.name,
        method=_METHODS[row.method],
        layers=row.layers,
        rank=row.rank,
        vector=np.frombuffer(row.vector, dtype="<f4").astype(np.float32),
        value=row.value,
        sigma=row.sigma,
    )


def _row(model_id: str, d: Direction, owner_key: str | None, job_id: str | None) -> StoredDirection:
    return StoredDirection(
        model_id=model_id,
        name=d.id,
        method=d.method,
        layers=d.layers,
        rank=d.rank,
        value=d.value,
        sigma=d.sigma,
        vector=np.ascontiguousarray(d.vector, dtype="<f4").tobytes(),
        owner_key=owner_key,
        scope=owner_key or "",
        job_id=job_id,
    )


def list_directions(
    session: Session,
    model_id: str,
    owner_key: str | None,
    method: Method | None = None,
    layers: str | None = None,
) -> list[tuple[StoredDirection, Direction]]:
    """The directions of a model this key may use, by method, range and rank."""
    query = sa.select(StoredDirection).where(
        StoredDirection.model_id == model_id, *visible_to(StoredDirection, owner_key)
    )
    if method is not None:
        query = query.where(StoredDirection.method == method)
    if layers is not None:
        query = query.where(StoredDirection.layers == layers)
    query = query.order_by(
        StoredDirection.method, StoredDirection.layers, StoredDirection.rank, StoredDirection.name
    )
    return [(row, to_direction(row)) for row in session.scalars(query)]


def lookup(
    session: Session, model_id: str, names: Sequence[str], owner_key: str | None
) -> dict[str, Direction]:
    """name -> Direction for those of `names` this key may use on this model (a key's own first)."""
    if not names:
        return {}
    query = sa.select(StoredDirection).where(
        StoredDirection.model_id == model_id,
        StoredDirection.name.in_(set(names)),
        *visible_to(StoredDirection, owner_key),
    )
    found: dict[str, Direction] = {}
    for row in sorted(session.scalars(query), key=lambda r: r.owner_key is not None):
        found[row.name] = to_direction(row)  # an owned row replaces a public one of the same name
    return found


def store_sefa(session: Session, model_id: str, directions: Sequence[Direction]) -> None:
    """Keep SeFa's directions for everyone; a concurrent request that stored them first wins."""
    try:
        with session.begin_nested():
            session.add_all(_row(model_id, d, None, None) for d in directions[:SEFA_STORED])
    except IntegrityError:
        pass  # the same numbers, stored by a request that got there first
    session.commit()


def replace_directions(
    session: Session,
    model_id: str,
    directions: Sequence[Direction],
    owner_key: str | None,
    job_id: str | None = None,
) -> list[StoredDirection]:
    """Store this key's directions, replacing any of the same names (a rerun of GANSpace, a user's
    direction uploaded again)."""
    scope = owner_key or ""
    session.execute(
        sa.delete(StoredDirection).where(
            StoredDirection.model_id == model_id,
            StoredDirection.scope == scope,
            StoredDirection.name.in_([d.id for d in directions]),
        )
    )
    rows = [_row(model_id, d, owner_key, job_id) for d in directions]
    session.add_all(rows)
    session.commit()
    return rows


def delete_direction(session: Session, model_id: str, name: str, owner_key: str | None) -> bool:
    """Delete this key's GANSpace or own direction; False if it has none of that name (SeFa's, shared
    and recomputable, are not deleted one by one)."""
    result = session.execute(
        sa.delete(StoredDirection).where(
            StoredDirection.model_id == model_id,
            StoredDirection.name == name,
            StoredDirection.scope == (owner_key or ""),
            StoredDirection.method != "sefa",
        )
    )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def resolve_edits(session: Session, model_id: str, texts: Sequence[str], owner_key: str | None) -> list[Edit]:
    """`ID:STRENGTH[@RANGE]` texts -> Edits on this model's directions; GanError names what is wrong."""
    specs = [parse_edit(text) for text in texts]
    return gan_resolve_edits(specs, lookup(session, model_id, [s.id for s in specs], owner_key))
