"""One bound on heavy work done within a request, for every route that does some.

Preparing a small dataset upload (decoding and resizing every image), reading an uploaded network file
(a child process of up to STYLEGAN_IMPORT_MAX_MEMORY_BYTES) and decoding a projection target each cost
hundreds of MB while they run; four 88-megapixel uploads at once grew the service by 2.8 GB. Each such
route holds a slot of one per-process semaphore (`STYLEGAN_HEAVY_MAX_CONCURRENT`) while it works; when
none is free the request is answered at once with 503 and Retry-After, never queued, so memory stays
bounded by the number of slots whatever the number of clients.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from api.errors import ServiceUnavailable

_state_lock = threading.Lock()


class HeavyWork:
    """At most `limit` heavy tasks at once in this process; one more is refused at once."""

    def __init__(self, limit: int, retry_after_seconds: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds
        self._semaphore = threading.BoundedSemaphore(limit)

    @contextmanager
    def slot(self, what: str) -> Iterator[None]:
        if not self._semaphore.acquire(blocking=False):
            raise ServiceUnavailable(
                f"the server is busy with {self.limit} uploads or conversions already "
                f"(STYLEGAN_HEAVY_MAX_CONCURRENT); {what} was not started, retry in "
                f"{self.retry_after_seconds} s",
                headers={"Retry-After": str(self.retry_after_seconds)},
            )
        try:
            yield
        finally:
            self._semaphore.release()


def heavy_work_of(app: FastAPI) -> HeavyWork:
    """The app's one HeavyWork, made on first use from its settings."""
    with _state_lock:
        heavy = getattr(app.state, "heavy_work", None)
        if heavy is None:
            settings = app.state.settings
            heavy = HeavyWork(settings.heavy_max_concurrent, settings.heavy_retry_after_seconds)
            app.state.heavy_work = heavy
    return heavy


def _heavy_work(request: Request) -> HeavyWork:
    return heavy_work_of(request.app)


HeavyDep = Annotated[HeavyWork, Depends(_heavy_work)]
