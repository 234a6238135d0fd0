"""Webhook pieces without a broker: signing, backoff, the URL check, the outbox row written with the
terminal move, and `deliver` against a real local HTTP receiver on SQLite."""

from __future__ import annotations

import datetime as dt
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.quiet_http import QuietLog
from worker import jobs
from worker.db.migrate import upgrade_head
from worker.db.models import WebhookDelivery, utcnow
from worker.db.session import make_engine, make_session_factory
from worker.net import UnsafeUrl, check_public_url
from worker.settings import Settings
from worker.webhooks import backoff_seconds, deliver, dispatch_due, sign, verify_signature

SECRET = "s3cret-for-tests"


class Receiver:
    """A local HTTP server that answers POSTs with the given statuses in turn (the last one repeats)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(QuietLog, http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers.items()), body))
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(statuses: list[int]) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "webhook_secret": SECRET,
        "allow_private_urls": True,
        "webhook_base_delay_seconds": 5.0,
        "webhook_max_attempts": 3,
        "webhook_timeout_seconds": 2.0,
        **overrides,
    }
    settings = Settings(**values)
    upgrade_head(settings.effective_database_url)
    return settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def sessions(settings: Settings) -> sessionmaker[Session]:
    return make_session_factory(make_engine(settings.effective_database_url))


def finished_probe(
    sessions: sessionmaker[Session], webhook_url: str | None, outcome: str = "succeeded"
) -> str:
    with sessions() as session:
        job = jobs.create_job(session, kind="probe", params={}, webhook_url=webhook_url)
        assert jobs.claim(session, job.id, "w1", 30) is not None
        if outcome == "succeeded":
            jobs.complete(session, job.id, "w1", {"ok": True})
        else:
            jobs.fail(session, job.id, "w1", "boom")
        return job.id


def deliveries(sessions: sessionmaker[Session]) -> list[WebhookDelivery]:
    with sessions() as session:
        rows = list(session.query(WebhookDelivery).all())
        session.expunge_all()
        return rows


# --- signing ---------------------------------------------------------------------------------------------


def test_signature_verifies_and_rejects_tampering_and_replays() -> None:
    body = b'{"event":"job.succeeded","job":{"id":"x"}}'
    header = sign(SECRET, 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature(SECRET, header, body, now=1_700_000_100)
    assert not verify_signature(SECRET, header, body + b" ", now=1_700_000_100)
    assert not verify_signature("another-secret", header, body, now=1_700_000_100)
    # Six minutes later the same signature is a replay.
    assert not verify_signature(SECRET, header, body, now=1_700_000_360)
    assert not verify_signature(SECRET, "garbage", body)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_seconds(n, 10, 60) for n in range(1, 6)] == [10, 20, 40, 60, 60]
    assert backoff_seconds(10_000, 1, 3600) == 3600  # no overflow for absurd attempt counts
    with pytest.raises(ValueError):
        backoff_seconds(0, 10, 60)


# --- the URL check -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("ftp://example.com/hook", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("http:///nohost", "no host"),
    ],
)
def test_private_and_odd_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl, match=reason):
        check_public_url(url, allow_private=False)


def test_public_addresses_pass_and_the_setting_allows_private_ones() -> None:
    assert check_public_url("https://93.184.216.34/hook", allow_private=False)
    assert check_public_url("http://127.0.0.1:9/hook", allow_private=True)
    with pytest.raises(UnsafeUrl, match="scheme"):
        check_public_url("gopher://127.0.0.1/", allow_private=True)


# --- the outbox row ------------------------------------------------------------------------------------


def test_terminal_move_writes_one_delivery_only_for_jobs_with_a_webhook(
    sessions: sessionmaker[Session],
) -> None:
    finished_probe(sessions, None)
    assert deliveries(sessions) == []
    job_id = finished_probe(sessions, "http://127.0.0.1:9/hook", outcome="failed")
    rows = deliveries(sessions)
    assert [(r.job_id, r.url, r.state, r.attempts) for r in rows] == [
        (job_id, "http://127.0.0.1:9/hook", "pending", 0)
    ]
    # A queued job canceled from the API ends there too.
    with sessions() as session:
        queued = jobs.create_job(session, kind="probe", params={}, webhook_url="http://127.0.0.1:9/c")
        jobs.request_cancel(session, queued.id)
    assert sorted(r.url for r in deliveries(sessions)) == ["http://127.0.0.1:9/c", "http://127.0.0.1:9/hook"]


# --- delivering ------------------------------------------------------------------------------------------


def test_deliver_retries_with_backoff_then_succeeds(
    settings: Settings, sessions: sessionmaker[Session], receiver_factory: Any
) -> None:
    receiver = receiver_factory([503, 200])
    job_id = finished_probe(sessions, receiver.url)
    (row,) = deliveries(sessions)

    sent: list[tuple[str, int]] = []
    with sessions() as session:
        assert dispatch_due(session, settings, lambda d, a: sent.append((d, a))) == [row.id]
        # Claimed: a second relay round (another worker) sends nothing.
        assert dispatch_due(session, settings, lambda d, a: sent.append((d, a))) == []
    assert sent == [(row.id, 0)]

    before = utcnow()
    assert deliver(settings, sessions, row.id, 0) == "retrying"
    # A duplicate message for the same attempt is dropped, not POSTed again.
    assert deliver(settings, sessions, row.id, 0) == "dropped"
    (row,) = deliveries(sessions)
    assert (row.state, row.attempts, row.last_status) == ("pending", 1, 503)
    assert row.next_attempt_at is not None
    wait = (row.next_attempt_at - before).total_seconds()
    assert 5.0 <= wait < 6.0, wait  # base delay for the first retry
    with sessions() as session:  # not due yet
        assert dispatch_due(session, settings, lambda d, a: None) == []
        later = utcnow() + dt.timedelta(seconds=6)
        assert dispatch_due(session, settings, lambda d, a: sent.append((d, a)), now=later) == [row.id]
    assert sent[-1] == (row.id, 1)

    assert deliver(settings, sessions, row.id, 1) == "delivered"
    (row,) = deliveries(sessions)
    assert (row.state, row.attempts, row.last_status, row.last_error) == ("delivered", 2, 200, None)
    assert row.delivered_at is not None and row.next_attempt_at is None
    assert len(receiver.requests) == 2
    headers, body = receiver.requests[-1]
    assert headers["X-StyleGAN-Event"] == "job.succeeded" and headers["X-StyleGAN-Delivery"] == row.id
    assert verify_signature(SECRET, headers["X-StyleGAN-Signature"], body)
    assert job_id.encode() in body


def test_deliver_gives_up_after_max_attempts(
    settings: Settings, sessions: sessionmaker[Session], receiver_factory: Any
) -> None:
    receiver = receiver_factory([500])
    finished_probe(sessions, receiver.url)
    (row,) = deliveries(sessions)
    outcomes = [deliver(settings, sessions, row.id, n) for n in range(settings.webhook_max_attempts)]
    assert outcomes == ["retrying", "retrying", "failed"]
    (row,) = deliveries(sessions)
    assert (row.state, row.attempts, row.last_status) == ("failed", 3, 500)
    assert row.last_error is not None and row.last_error.startswith("HTTP 500")
    assert len(receiver.requests) == 3


def test_unreachable_receiver_and_refused_url_are_recorded(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "a", allow_private_urls=False)
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    finished_probe(sessions, "http://127.0.0.1:9/hook")
    (row,) = deliveries(sessions)
    # Loopback with private URLs off: refused at delivery time too, for good (no retry).
    assert deliver(settings, sessions, row.id, 0) == "failed"
    (row,) = deliveries(sessions)
    assert row.state == "failed" and "loopback" in (row.last_error or "")

    settings = make_settings(tmp_path / "b")
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    finished_probe(sessions, "http://127.0.0.1:9/hook")  # nothing listens on port 9
    (row,) = deliveries(sessions)
    assert deliver(settings, sessions, row.id, 0) == "retrying"
    (row,) = deliveries(sessions)
    assert row.last_status is None and "ConnectError" in (row.last_error or "")
