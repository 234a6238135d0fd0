"""Server-Sent Events for a job: its `job_events` rows as `text/event-stream`.

The stream polls the database (every `events_poll_seconds`), so it sees events written by any worker on
any machine; each event carries its row id as the SSE `id`, so a client that reconnects with
`Last-Event-ID` (or `?after=`) gets exactly the later ones. While nothing happens a `: keep-alive`
comment goes out every `events_keepalive_seconds`, which keeps proxies from closing an idle
connection. The stream ends after the job's terminal state event.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator, Callable

import anyio
from sqlalchemy.orm import Session

from api.errors import InvalidRequest
from worker.db.models import Job, JobEvent
from worker.events import events_after
from worker.jobs import TERMINAL_STATES
from worker.wire import MAX_INT64

# SSE `retry:` (ms): how long a browser's EventSource waits before reconnecting after a drop.
RECONNECT_MS = 2000
_TERMINAL = frozenset(state.value for state in TERMINAL_STATES)


def resume_point(last_event_id: str | None, after: int | None) -> int:
    """The id after which to start: the Last-Event-ID header wins over `?after=`."""
    if last_event_id is not None and last_event_id.strip():
        try:
            value = int(last_event_id.strip())
        except ValueError:
            raise InvalidRequest(
                f"header Last-Event-ID: must be an event id (an integer) from this stream, got {last_event_id!r}"
            ) from None
        # Ids are 64-bit database keys: a larger one would overflow the driver, not just match nothing.
        if not 0 <= value <= MAX_INT64:
            raise InvalidRequest(f"header Last-Event-ID: must be in [0, {MAX_INT64}], got {value}")
        return value
    return after or 0


def format_event(event: JobEvent) -> str:
    data = json.dumps(event.data, separators=(",", ":"), allow_nan=False)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"


# Threads that event streams may poll the database in at once. Without a limiter of their own they share
# the server's default pool (40 threads) with every synchronous route, and hundreds of open streams, each
# polling every events_poll_seconds, queued /readyz and the other routes behind their reads: with 200
# streams open, /readyz's p99 rose by about 260 ms, against about 100 ms with this limiter
# (tests/hardening/test_load.py, 2 shared cores).
POLL_THREADS = 4
# One limiter per event loop (a CapacityLimiter belongs to the loop it is used on; tests run several).
_poll_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def _poll_limiter() -> anyio.CapacityLimiter:
    loop = asyncio.get_running_loop()
    limiter = _poll_limiters.get(loop)
    if limiter is None:
        limiter = _poll_limiters[loop] = anyio.CapacityLimiter(POLL_THREADS)
    return limiter


def _poll(sessions: Callable[[], Session], job_id: str, after: int) -> tuple[list[JobEvent], str | None]:
    with sessions() as session:
        events = events_after(session, job_id, after)
        job = session.get(Job, job_id)
        session.expunge_all()
        return events, job.state if job is not None else None


async def stream_events(
    sessions: Callable[[], Session],
    job_id: str,
    after: int,
    *,
    poll_seconds: float,
    keepalive_seconds: float,
    is_disconnected: Callable[[], object],
) -> AsyncIterator[str]:
    """Yield SSE frames until the terminal state event has been sent (or the client went away)."""
    yield f"retry: {RECONNECT_MS}\n\n"
    last_sent = time.monotonic()
    while True:
        # The state is read after the events, so a terminal job whose last events were already sent
        # (a client resuming after the end) closes at once instead of waiting forever.
        events, state = await anyio.to_thread.run_sync(
            _poll, sessions, job_id, after, limiter=_poll_limiter()
        )
        for event in events:
            yield format_event(event)
            after = event.id
            last_sent = time.monotonic()
            if event.type == "state" and event.data.get("state") in _TERMINAL:
                return
        if not events and (state is None or state in _TERMINAL):
            return
        if len(events) >= 500:  # a backlog (a late client): read on without waiting
            continue
        if time.monotonic() - last_sent >= keepalive_seconds:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        if await is_disconnected():  # type: ignore[misc]
            return
        await anyio.sleep(poll_seconds)
