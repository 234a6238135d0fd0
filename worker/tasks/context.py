"""What a job handler sees while it runs: where its data lives (sessions, storage), whose job it is,
the device to compute on, a way to report progress, and cancellation. The runner (worker/tasks/run.py)
builds it, so no handler makes its own sessions, storage or device choice."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from sqlalchemy.orm import Session, sessionmaker

from gan.errors import GanError
from worker.db.queries import Row, load_visible
from worker.settings import Settings
from worker.storage import Storage


class JobCanceled(Exception):
    """Raised inside a handler when its job was asked to stop; the runner records `canceled`."""


class RowGone(GanError):
    """A model or dataset the job names was deleted, or is not visible to the job's owner."""


class JobAbandoned(Exception):
    """Raised inside a handler when this worker lost its lease: another run owns the job now."""


@dataclass
class JobContext:
    """Handed to a job handler by the runner (worker/tasks/run.py).

    Handlers call `report()` between steps and `sleep()`/`check()` in loops; both raise JobCanceled once
    a cancel was requested and JobAbandoned once the lease is gone, so stopping needs no extra code.
    """

    job_id: str
    attempt: int
    settings: Settings
    sessions: sessionmaker[Session]
    storage: Storage
    # The key that queued the job (None with API keys off): the job sees what that key may see.
    owner_key: str | None
    device: torch.device
    report_progress: Callable[[float, Mapping[str, Any]], None]
    cancel_event: threading.Event = field(default_factory=threading.Event)
    lost_event: threading.Event = field(default_factory=threading.Event)
    # Set together with either event above, so that `sleep` wakes for both.
    wake_event: threading.Event = field(default_factory=threading.Event)

    def load_visible(self, session: Session, row_type: type[Row], row_id: str) -> Row:
        """The row the job works on, if its owner may use it (worker/db/queries.py); RowGone if not."""
        row = load_visible(session, row_type, row_id, self.owner_key)
        if row is None:
            raise RowGone(f"{row_type.__tablename__.rstrip('s')} {row_id} no longer exists")
        return row

    def signal_cancel(self) -> None:
        self.cancel_event.set()
        self.wake_event.set()

    def signal_lost(self) -> None:
        self.lost_event.set()
        self.wake_event.set()

    def check(self) -> None:
        """Raise if the job should stop now."""
        if self.lost_event.is_set():
            raise JobAbandoned(f"job {self.job_id}: lease lost; another worker owns it now")
        if self.cancel_event.is_set():
            raise JobCanceled(f"job {self.job_id} canceled on request")

    def report(self, progress: float, detail: Mapping[str, Any] | None = None) -> None:
        """Record progress in [0, 1] with a free-form detail, then stop if asked to."""
        self.check()
        self.report_progress(progress, dict(detail or {}))
        self.check()

    def sleep(self, seconds: float) -> None:
        """Wait, waking at once on a cancel request or a lost lease."""
        self.check()
        # A cancel or a lost lease ends the wait early; either is seen within one heartbeat.
        self.wake_event.wait(seconds)
        self.check()
