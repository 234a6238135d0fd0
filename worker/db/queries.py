"""Who may use which row: the one ownership rule, shared by the API's routes and the workers' jobs.

With API keys off every row has no owner and everything is visible. With keys on a row belongs to the
key that made it (`owner_key`, a digest of the key); a row without an owner is public: the bundled
demo model, and whatever was made before keys were switched on. Another key's row does not exist for
the caller (the API answers 404, a job fails as if the row were deleted).
"""

from __future__ import annotations

from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import Base

Row = TypeVar("Row", bound=Base)


def visible_to(row_type: type[Base], owner_key: str | None) -> list[sa.ColumnElement[bool]]:
    """WHERE clauses for the rows of `row_type` that `owner_key` may use (none needed with keys off)."""
    if owner_key is None:
        return []
    owner = row_type.owner_key  # type: ignore[attr-defined]
    return [sa.or_(owner == owner_key, owner.is_(None))]


def load_visible(session: Session, row_type: type[Row], row_id: str, owner_key: str | None) -> Row | None:
    """The row with this id if `owner_key` may use it, else None."""
    query = sa.select(row_type).where(row_type.id == row_id, *visible_to(row_type, owner_key))  # type: ignore[attr-defined]
    return session.scalars(query).first()
