"""A job's event log: append-only `job_events` rows that the SSE stream (`GET /v1/jobs/{id}/events`) reads.

Writers and readers meet only in the database, so the stream works whichever process or machine ran
the job. The row id orders events and is the SSE event id a client resumes from (Last-Event-ID).

- `state`: every state transition, written by `worker.jobs` in the same transaction as the move, so
  the log can never disagree with the job row;
- `progress`, `preview`, `checkpoint`: written by long jobs (training) as they go.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import JobEvent

EventType = Literal["progress", "preview", "checkpoint", "state"]
EVENT_TYPES: tuple[EventType, ...] = ("progress", "preview", "checkpoint", "state")


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity (a diverged loss is NaN): they become null rather than invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def add_event(session: Session, job_id: str, type: EventType, data: Mapping[str, Any]) -> JobEvent:
    """Add an event to the session without committing: the caller commits it with whatever it belongs to."""
    if type not in EVENT_TYPES:
        raise ValueError(f"event type must be one of {', '.join(EVENT_TYPES)}, got {type!r}")
    event = JobEvent(job_id=job_id, type=type, data=_json_safe(dict(data)))
    session.add(event)
    return event


def append_event(session: Session, job_id: str, type: EventType, data: Mapping[str, Any]) -> int:
    """Write one event and commit; returns its id."""
    event = add_event(session, job_id, type, data)
    session.commit()
    return event.id


def events_after(session: Session, job_id: str, after_id: int = 0, limit: int = 500) -> list[JobEvent]:
    """The job's events with id > after_id, oldest first (at most `limit`)."""
    rows = session.scalars(
        sa.select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.id > after_id)
        .order_by(JobEvent.id)
        .limit(limit)
    ).all()
    return list(rows)


def last_event(session: Session, job_id: str, type: EventType) -> JobEvent | None:
    """The newest event of one type (the latest preview, say)."""
    return session.scalars(
        sa.select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.type == type)
        .order_by(JobEvent.id.desc())
        .limit(1)
    ).first()
