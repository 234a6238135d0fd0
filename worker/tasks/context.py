"""What a job handler sees while it runs: its params, a way to report progress, and cancellation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.settings import Settings


class JobCanceled(Exception):
    """Raised inside a handler when its job was asked to stop; the runner records `canceled`."""


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
    report_progress: Callable[[float, Mapping[str, Any]], None]
    cancel_event: threading.Event = field(default_factory=threading.Event)
    lost_event: threading.Event = field(default_factory=threading.Event)
    # Set together with either event above, so that `sleep` wakes for both.
    wake_event: threading.Event = field(default_factory=threading.Event)

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
