"""Webhooks: when a job that carries a `webhook_url` reaches a terminal state, POST it there.

The delivery is a transactional outbox. `record_terminal` adds a `webhook_deliveries` row in the same
transaction as the job's move into succeeded/failed/canceled (worker/jobs.py `_move`), so a committed
terminal state always has its notification and a rolled-back one never does. Each worker's reconciler
loop then calls `dispatch_due`, which hands due deliveries to the `stylegan.deliver_webhook` task
(worker/tasks/webhook.py); the task POSTs, records the outcome on the row, and on a network error or a
non-2xx answer schedules the next attempt after an exponential backoff
(`webhook_base_delay_seconds * 2**(attempt-1)`, capped at `webhook_max_delay_seconds`) until
`webhook_max_attempts` attempts have failed.

Delivery is at least once: a receiver may see one delivery twice (a worker killed between the POST and
the database write), so it should de-duplicate on the `X-StyleGAN-Delivery` header.

The request:

    POST <webhook_url>
    Content-Type: application/json
    X-StyleGAN-Event: job.succeeded            (job.failed, job.canceled)
    X-StyleGAN-Delivery: <delivery id>
    X-StyleGAN-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(webhook_secret, f"{t}.{body}")>

    {"event": "job.succeeded", "job": <the job as GET /v1/jobs/{id} shows it>}

The signature header is absent when no `STYLEGAN_WEBHOOK_SECRET` is set. To verify, recompute the HMAC
over the raw body bytes (not a re-serialised copy) and refuse old timestamps, which stops replays:

    import hashlib, hmac, time

    def verify(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
        fields = dict(part.split("=", 1) for part in header.split(","))
        signed = fields["t"].encode() + b"." + body
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        fresh = abs(time.time() - int(fields["t"])) <= tolerance
        return fresh and hmac.compare_digest(expected, fields["v1"])

(`verify_signature` below is the same check, used by the tests.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import httpx
import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy.orm import Session, sessionmaker

from worker.db.models import Job, WebhookDelivery, utcnow
from worker.net import UnsafeUrl, pinned
from worker.settings import Settings

log = logging.getLogger(__name__)

DeliveryOutcome = Literal["delivered", "retrying", "failed", "dropped"]

USER_AGENT = "stylegan-service-webhooks/1"
# The longest stretch of a receiver's answer kept in last_error: enough to read an error page's title.
MAX_ERROR_CHARS = 500
# Deliveries handed to the broker per dispatch round; the rest wait for the next round.
DISPATCH_BATCH = 100
# Seconds a dispatched delivery is left to its task before the relay sends it again (a lost message).
# Generous: a task may wait behind a running job on the inference queue.
MIN_REDISPATCH_SECONDS = 300.0

_datetime_json = TypeAdapter(dt.datetime)


# --- recording (inside the job's terminal transition) ------------------------------------------------


def record_terminal(session: Session, job_id: str) -> None:
    """Queue a notification for a job that just became terminal, if it has a webhook_url.

    Called by worker/jobs.py inside the transition's transaction, before its commit. A job becomes
    terminal once (terminal states have no way out), so this adds at most one row per job.
    """
    url = session.scalar(sa.select(Job.webhook_url).where(Job.id == job_id))
    if url:
        session.add(WebhookDelivery(job_id=job_id, url=url, state="pending", next_attempt_at=utcnow()))
        session.flush()


# --- the payload --------------------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    # The same text pydantic gives the API's JobOut, so the webhook and GET /v1/jobs/{id} agree.
    return None if value is None else str(_datetime_json.dump_python(value, mode="json"))


def job_document(job: Job) -> dict[str, Any]:
    """The job as GET /v1/jobs/{id} shows it (api/schemas/jobs.py `job_out`; worker/ cannot import api/,
    so the fields are listed here too, and tests/api/test_webhooks*.py checks that the two agree)."""
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "progress": job.progress,
        "progress_detail": job.progress_detail or None,
        "params": job.params or {},
        "result": job.result,
        "error": job.error,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "webhook_url": job.webhook_url,
    }


def event_name(state: str) -> str:
    return f"job.{state}"


def encode_body(event: str, job: Job) -> bytes:
    return json.dumps({"event": event, "job": job_document(job)}, separators=(",", ":")).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-StyleGAN-Signature value: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.

    The timestamp is inside the signed text so that an old delivery cannot be replayed with a new one.
    """
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str, header: str, body: bytes, *, tolerance_seconds: float = 300.0, now: float | None = None
) -> bool:
    """True when `header` is a valid signature of `body` made within `tolerance_seconds` of `now`."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Delay after failed attempt number `attempt` (1-based): base, 2 base, 4 base, ... at most cap."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    return float(min(cap, base * 2.0 ** min(attempt - 1, 60)))


# --- dispatching (the relay) --------------------------------------------------------------------------


def redispatch_seconds(settings: Settings) -> float:
    return max(MIN_REDISPATCH_SECONDS, 4 * settings.webhook_timeout_seconds)


def dispatch_due(
    session: Session,
    settings: Settings,
    send: Callable[[str, int], None],
    now: dt.datetime | None = None,
) -> list[str]:
    """Hand every pending delivery whose time has come to `send(delivery_id, attempts)`.

    Each is first pushed `redispatch_seconds` into the future by a conditional UPDATE, so that of
    several workers' relays exactly one sends it, and a message lost on the way is sent again later.
    Returns the ids sent.
    """
    now = now or utcnow()
    due = session.execute(
        sa.select(WebhookDelivery.id, WebhookDelivery.attempts)
        .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(DISPATCH_BATCH)
    ).all()
    session.commit()
    sent: list[str] = []
    later = now + dt.timedelta(seconds=redispatch_seconds(settings))
    for delivery_id, attempts in due:
        claimed = session.execute(
            sa.update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.state == "pending",
                WebhookDelivery.attempts == attempts,
                WebhookDelivery.next_attempt_at <= now,
            )
            .values(next_attempt_at=later)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue
        try:
            send(delivery_id, attempts)
        except Exception:
            # The broker is down: leave it due again at once for the next round.
            log.exception("webhook delivery %s: could not be queued", delivery_id)
            _set(session, delivery_id, next_attempt_at=now)
            continue
        sent.append(delivery_id)
    return sent


def _set(session: Session, delivery_id: str, **values: Any) -> None:
    session.execute(
        sa.update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()


# --- delivering (the task) ----------------------------------------------------------------------------


def deliver(
    settings: Settings,
    sessions: sessionmaker[Session],
    delivery_id: str,
    expected_attempts: int,
    *,
    client: httpx.Client | None = None,
) -> DeliveryOutcome:
    """Make attempt number `expected_attempts + 1` of one delivery and record how it went.

    The attempt is claimed by a conditional UPDATE on the attempt count, so a duplicate message for
    the same attempt is dropped rather than POSTed twice.
    """
    with sessions() as session:
        claimed = session.execute(
            sa.update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.state == "pending",
                WebhookDelivery.attempts == expected_attempts,
            )
            .values(attempts=WebhookDelivery.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            log.info(
                "webhook delivery %s: attempt %d already made; dropped", delivery_id, expected_attempts + 1
            )
            return "dropped"
        delivery = session.get(WebhookDelivery, delivery_id, populate_existing=True)
        assert delivery is not None
        job = session.get(Job, delivery.job_id, populate_existing=True)
        attempt = delivery.attempts
        url = delivery.url
        if job is None:  # deleted meanwhile; the row cascades away with it
            return "dropped"
        event = event_name(job.state)
        body = encode_body(event, job)

    status: int | None = None
    try:
        # Checked again at every attempt (the name may resolve elsewhere now than at submission), and
        # sent to the address that was checked.
        target = pinned(url, settings.allow_private_urls)
    except UnsafeUrl as exc:
        return _record_failure(settings, sessions, delivery_id, attempt, None, f"refused: {exc}", final=True)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-StyleGAN-Event": event,
        "X-StyleGAN-Delivery": delivery_id,
    }
    if settings.webhook_secret is not None:
        headers["X-StyleGAN-Signature"] = sign(settings.webhook_secret, int(time.time()), body)
    try:
        headers |= target.headers
        if client is None:
            with httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False) as own:
                response = own.post(target.url, content=body, headers=headers, extensions=target.extensions)
        else:
            response = client.post(target.url, content=body, headers=headers, extensions=target.extensions)
        status = response.status_code
        if 200 <= status < 300:
            with sessions() as session:
                _set(
                    session,
                    delivery_id,
                    state="delivered",
                    last_status=status,
                    last_error=None,
                    delivered_at=utcnow(),
                    next_attempt_at=None,
                )
            log.info(
                "webhook delivery %s: %s delivered (HTTP %d, attempt %d)", delivery_id, event, status, attempt
            )
            return "delivered"
        error = f"HTTP {status}: {response.text[:MAX_ERROR_CHARS]}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    return _record_failure(settings, sessions, delivery_id, attempt, status, error, final=False)


def _record_failure(
    settings: Settings,
    sessions: sessionmaker[Session],
    delivery_id: str,
    attempt: int,
    status: int | None,
    error: str,
    *,
    final: bool,
) -> DeliveryOutcome:
    give_up = final or attempt >= settings.webhook_max_attempts
    values: dict[str, Any] = {"last_status": status, "last_error": error}
    if give_up:
        values |= {"state": "failed", "next_attempt_at": None}
    else:
        delay = backoff_seconds(
            attempt, settings.webhook_base_delay_seconds, settings.webhook_max_delay_seconds
        )
        values["next_attempt_at"] = utcnow() + dt.timedelta(seconds=delay)
    with sessions() as session:
        _set(session, delivery_id, **values)
    log.warning(
        "webhook delivery %s: attempt %d failed (%s)%s",
        delivery_id,
        attempt,
        error,
        "; giving up" if give_up else "; will retry",
    )
    return "failed" if give_up else "retrying"
