"""Overload protection for synchronous sampling.

Two limits, answering differently because they mean different things:
- a token bucket per key (`sample_rate_per_second`, `sample_burst`): this caller asks too often, 429
  with Retry-After the seconds until its next token;
- a cap on requests waited on at once (`sample_max_in_flight`): the service is busy, 503 with
  Retry-After. Each waiting request holds one of the server's threads, so without the cap a burst
  would take them all and even /healthz would stall.
With auth off every caller shares one bucket (there is no key to tell them apart).

Both are counted in this process by default. With `STYLEGAN_LIMITS_REDIS_URL` they are counted in Redis
instead (`RedisRateLimiter`, `RedisInFlightLimit`), so that every API process behind a load balancer
enforces one limit: each check is one Lua script, atomic on the server, timed by the server's clock (API
hosts' clocks need not agree). An in-flight hold there is a lease that expires on its own, so an API
process killed mid-request cannot keep its slots forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import redis
from redis.exceptions import RedisError

from api.errors import ApiError, ServiceUnavailable
from worker.settings import Settings

# Retry-After for a full process: a sampling request takes well under a second, so by then some of the
# waiting ones will have finished.
BUSY_RETRY_AFTER_S = 1
# Buckets idle this long are full again and are dropped, so keys seen once do not accumulate.
_IDLE_DROP_S = 600.0
# A Redis in-flight hold outlives the longest a request may wait (sample_timeout_seconds) by this much
# before it counts as left behind by a dead process.
_HOLD_MARGIN_S = 30.0
_REDIS_PREFIX = "stylegan:limits:"
IN_FLIGHT_KEY = f"{_REDIS_PREFIX}sample-in-flight"


class RateLimited(ApiError):
    status, title, slug = 429, "Too many requests", "too-many-requests"


class SampleRateLimit(Protocol):
    def check(self, key: str | None) -> None: ...


class SampleInFlightLimit(Protocol):
    def hold(self) -> AbstractContextManager[None]: ...


def _rate_limited(rate: float, burst: int, wait: float) -> RateLimited:
    retry = max(1, math.ceil(wait))
    return RateLimited(
        f"sampling rate limit: {burst} requests at once and {rate:g} per second for this "
        f"key (STYLEGAN_SAMPLE_RATE_PER_SECOND, STYLEGAN_SAMPLE_BURST); retry in {retry} s",
        headers={"Retry-After": str(retry)},
    )


def _busy(limit: int, where: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"{where} already waiting on {limit} sampling requests (STYLEGAN_SAMPLE_MAX_IN_FLIGHT); retry shortly",
        headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
    )


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
            raise _rate_limited(self.rate, self.burst, wait)

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
            raise _busy(self.limit, "this server is")
        with self._lock:
            self.current += 1
        try:
            yield
        finally:
            with self._lock:
                self.current -= 1
            self._semaphore.release()


# --- shared by all API processes: counted in Redis ------------------------------------------------------

# The same bucket as TokenBucket.take, in one atomic step on the server. Floats travel as strings (a Lua
# number returned to Redis is truncated to an integer).
_TAKE_TOKEN = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens, updated = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""

# Holders are members of a sorted set scored by when their lease runs out; expired ones are dropped
# before counting.
_ACQUIRE_HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
return 1
"""


def _limits_unreachable(exc: RedisError) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"the limits store (STYLEGAN_LIMITS_REDIS_URL) is unreachable: {type(exc).__name__}; retry later",
        headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
    )


class RedisRateLimiter:
    """One token bucket per key in Redis, shared by every process that uses the same Redis."""

    def __init__(self, client: redis.Redis, rate: float, burst: int) -> None:
        if not (rate > 0 and math.isfinite(rate)) or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._take = client.register_script(_TAKE_TOKEN)

    def check(self, key: str | None) -> None:
        # The key is hashed: bearer keys are secrets and have no business in Redis's keyspace.
        name = hashlib.sha256((key or "anonymous").encode()).hexdigest()[:32]
        try:
            wait = float(
                self._take(keys=[f"{_REDIS_PREFIX}sample-rate:{name}"], args=[self.rate, self.burst])
            )
        except RedisError as exc:
            raise _limits_unreachable(exc) from None
        if wait > 0:
            raise _rate_limited(self.rate, self.burst, wait)


class RedisInFlightLimit:
    """At most `limit` holders at once across every process sharing the Redis; each hold is a lease of
    `lease_s` seconds, released when the request ends."""

    def __init__(self, client: redis.Redis, limit: int, lease_s: float) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self.lease_s = lease_s
        self.client = client
        self.key = IN_FLIGHT_KEY
        self._acquire = client.register_script(_ACQUIRE_HOLD)

    @contextmanager
    def hold(self) -> Iterator[None]:
        holder = uuid.uuid4().hex
        try:
            taken = int(self._acquire(keys=[self.key], args=[self.limit, self.lease_s, holder]))
        except RedisError as exc:
            raise _limits_unreachable(exc) from None
        if not taken:
            raise _busy(self.limit, "the service is")
        try:
            yield
        finally:
            with contextlib.suppress(RedisError):  # else the lease runs out on its own
                self.client.zrem(self.key, holder)


def sample_limits(settings: Settings) -> tuple[SampleRateLimit, SampleInFlightLimit]:
    """The sampling rate limit and in-flight cap for these settings: in Redis when limits_redis_url is
    set, else in this process."""
    if settings.limits_redis_url is None:
        return (
            RateLimiter(settings.sample_rate_per_second, settings.sample_burst),
            InFlightLimit(settings.sample_max_in_flight),
        )
    client = redis.Redis.from_url(
        settings.limits_redis_url,
        socket_timeout=settings.broker_timeout_seconds,
        socket_connect_timeout=settings.broker_timeout_seconds,
    )
    return (
        RedisRateLimiter(client, settings.sample_rate_per_second, settings.sample_burst),
        RedisInFlightLimit(
            client, settings.sample_max_in_flight, settings.sample_timeout_seconds + _HOLD_MARGIN_S
        ),
    )
