"""Overload protection for synchronous sampling, per API process.

Two limits, answering differently because they mean different things:
- a token bucket per key (`sample_rate_per_second`, `sample_burst`): this caller asks too often, 429
  with Retry-After the seconds until its next token;
- a cap on requests this process waits on at once (`sample_max_in_flight`): the service is busy, 503
  with Retry-After. Each waiting request holds one of the server's threads, so without the cap a burst
  would take them all and even /healthz would stall.
With auth off every caller shares one bucket (there is no key to tell them apart).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from api.errors import ApiError, ServiceUnavailable

# Retry-After for a full process: a sampling request takes well under a second, so by then some of the
# waiting ones will have finished.
BUSY_RETRY_AFTER_S = 1
# Buckets idle this long are full again and are dropped, so keys seen once do not accumulate.
_IDLE_DROP_S = 600.0


class RateLimited(ApiError):
    status, title, slug = 429, "Too many requests", "too-many-requests"


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; each request takes one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if not (rate > 0 and math.isfinite(rate)) or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.updated = clock()

    def take(self) -> float:
        """0.0 when a token was taken; else the seconds until one will be there (nothing is taken)."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One TokenBucket per key."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def check(self, key: str | None) -> None:
        """Take a token for `key` or raise RateLimited with Retry-After (whole seconds, at least 1)."""
        name = key or "anonymous"
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                if len(self._buckets) > 10_000:
                    self._drop_idle()
                bucket = self._buckets[name] = TokenBucket(self.rate, self.burst, self.clock)
            wait = bucket.take()
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise RateLimited(
                f"sampling rate limit: {self.burst} requests at once and {self.rate:g} per second for this "
                f"key (STYLEGAN_SAMPLE_RATE_PER_SECOND, STYLEGAN_SAMPLE_BURST); retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )

    def _drop_idle(self) -> None:
        now = self.clock()
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < _IDLE_DROP_S}


class InFlightLimit:
    """At most `limit` holders at once; one more is refused at once (never queued)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self._semaphore = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.current = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        if not self._semaphore.acquire(blocking=False):
            raise ServiceUnavailable(
                f"this server is already waiting on {self.limit} sampling requests "
                "(STYLEGAN_SAMPLE_MAX_IN_FLIGHT); retry shortly",
                headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
            )
        with self._lock:
            self.current += 1
        try:
            yield
        finally:
            with self._lock:
                self.current -= 1
            self._semaphore.release()
