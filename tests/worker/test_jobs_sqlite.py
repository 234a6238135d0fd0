"""The job state machine on the embedded SQLite database (migrated from empty, as in production)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from worker import jobs
from worker.db.migrate import upgrade_head
from worker.db.models import utcnow
from worker.db.session import make_engine, make_session_factory
from worker.job_kinds import InvalidJobParams, UnknownJobKind
from worker.jobs import ALLOWED_TRANSITIONS, TERMINAL_STATES, JobState


@pytest.fixture
def session(tmp_path: Path) -> Session:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    upgrade_head(url)
    engine = make_engine(url)
    with make_session_factory(engine)() as s:
        yield s
    engine.dispose()


def _probe(session: Session, **kw: object) -> jobs.Job:
    return jobs.create_job(session, kind="probe", params={"seconds": 0.5}, **kw)  # type: ignore[arg-type]


def test_table_is_consistent() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(JobState)
    for state in TERMINAL_STATES:
        assert ALLOWED_TRANSITIONS[state] == frozenset()
    for state in set(JobState) - TERMINAL_STATES:
        assert ALLOWED_TRANSITIONS[state], f"{state} is a dead end but not terminal"
    assert jobs.sources_of(JobState.RUNNING) == {JobState.QUEUED}


def test_claim_then_complete(session: Session) -> None:
    job = _probe(session)
    assert job.state == "queued" and job.attempts == 0 and job.queue == "inference"
    claimed = jobs.claim(session, job.id, "w1", lease_seconds=30)
    assert claimed is not None and claimed.state == "running" and claimed.attempts == 1
    assert claimed.lease_expires_at is not None and claimed.lease_expires_at > utcnow()
    # The same id delivered again is dropped, whoever gets it.
    assert jobs.claim(session, job.id, "w2", lease_seconds=30) is None
    jobs.set_progress(session, job.id, "w1", 0.5, {"step": 1})
    assert jobs.get_job(session, job.id).progress == 0.5
    with pytest.raises(jobs.LeaseLost):
        jobs.set_progress(session, job.id, "w2", 0.6, {})
    with pytest.raises(jobs.LeaseLost):
        jobs.complete(session, job.id, "w2", {"x": 1})
    done = jobs.complete(session, job.id, "w1", {"x": 1})
    assert done.state == "succeeded" and done.result == {"x": 1} and done.progress == 1.0
    assert done.finished_at is not None and done.finished_at.tzinfo is not None
    assert jobs.claim(session, job.id, "w3", lease_seconds=30) is None


def test_illegal_moves_are_refused(session: Session) -> None:
    job = _probe(session)
    # A queued job cannot be completed: only a running one held by the caller can.
    with pytest.raises(jobs.LeaseLost):
        jobs.complete(session, job.id, "w1", {})
    assert jobs.get_job(session, job.id).state == "queued"
    jobs.claim(session, job.id, "w1", 30)
    jobs.fail(session, job.id, "w1", "boom")
    with pytest.raises(jobs.IllegalTransition):
        jobs.request_cancel(session, job.id)
    with pytest.raises(jobs.LeaseLost):
        jobs.complete(session, job.id, "w1", {})
    final = jobs.get_job(session, job.id)
    assert final.state == "failed" and final.error == "boom"
    with pytest.raises(jobs.IllegalTransition):
        jobs.check_transition(JobState.SUCCEEDED, JobState.RUNNING)
    with pytest.raises(ValueError):
        jobs.set_progress(session, job.id, "w1", 1.5, {})


def test_cancel_queued_and_running(session: Session) -> None:
    queued = _probe(session)
    assert jobs.request_cancel(session, queued.id).state == "canceled"
    assert jobs.claim(session, queued.id, "w1", 30) is None
    assert jobs.request_cancel(session, queued.id).state == "canceled"  # repeat is a no-op

    running = _probe(session)
    jobs.claim(session, running.id, "w1", 30)
    flagged = jobs.request_cancel(session, running.id)
    assert flagged.state == "running" and flagged.cancel_requested
    assert jobs.cancel_requested(session, running.id)
    assert jobs.mark_canceled(session, running.id, "w1").state == "canceled"


def test_idempotency(session: Session) -> None:
    first = jobs.create_job(session, kind="probe", params={"seconds": 1}, idempotency_key="k1")
    again = jobs.create_job(session, kind="probe", params={"seconds": 1.0}, idempotency_key="k1")
    assert again.id == first.id
    with pytest.raises(jobs.IdempotencyConflict):
        jobs.create_job(session, kind="probe", params={"seconds": 2}, idempotency_key="k1")
    # Keys are scoped per owner.
    other = jobs.create_job(session, kind="probe", params={"seconds": 2}, idempotency_key="k1", owner_key="o")
    assert other.id != first.id
    assert jobs.list_jobs(session, owner_key=None)[1] == 2
    assert [j.id for j in jobs.list_jobs(session, owner_key="o")[0]] == [other.id]
    with pytest.raises(jobs.JobNotFound):
        jobs.get_job(session, first.id, owner_key="o")


def test_bad_params_never_reach_the_table(session: Session) -> None:
    with pytest.raises(InvalidJobParams) as info:
        jobs.create_job(session, kind="probe", params={"seconds": -1})
    assert info.value.field == "params.seconds"
    with pytest.raises(UnknownJobKind):
        jobs.create_job(session, kind="nope", params={})
    with pytest.raises(ValueError, match="queue"):
        jobs.create_job(session, kind="probe", params={"queue": "training"}, queue="inference")
    assert jobs.list_jobs(session, owner_key=None)[1] == 0


def test_list_filters_and_pages(session: Session) -> None:
    ids = [_probe(session).id for _ in range(5)]
    jobs.request_cancel(session, ids[0])
    page, total = jobs.list_jobs(session, owner_key=None, state="queued", limit=2, offset=0)
    assert total == 4 and len(page) == 2
    rest, _ = jobs.list_jobs(session, owner_key=None, state="queued", limit=10, offset=2)
    assert {j.id for j in page} | {j.id for j in rest} == set(ids[1:])
    assert jobs.queue_depth(session, "inference") == 4


def test_reconcile_requeues_then_gives_up(session: Session) -> None:
    job = jobs.create_job(session, kind="probe", params={}, max_attempts=2)
    jobs.claim(session, job.id, "w1", lease_seconds=1)
    # A live lease is left alone.
    assert jobs.reconcile_expired_leases(session) == []
    later = utcnow() + dt.timedelta(seconds=5)
    assert jobs.reconcile_expired_leases(session, now=later) == [job.id]
    assert jobs.get_job(session, job.id).state == "queued"
    # The lost worker's late heartbeat must not revive its claim.
    assert not jobs.heartbeat(session, job.id, "w1", 30)
    jobs.claim(session, job.id, "w2", lease_seconds=1)
    assert jobs.reconcile_expired_leases(session, now=utcnow() + dt.timedelta(seconds=5)) == []
    failed = jobs.get_job(session, job.id)
    assert failed.state == "failed" and failed.attempts == 2
    assert failed.error == "worker lost 2 times (lease expired); giving up"


def test_heartbeat_keeps_the_job(session: Session) -> None:
    job = _probe(session)
    jobs.claim(session, job.id, "w1", lease_seconds=1)
    assert jobs.heartbeat(session, job.id, "w1", lease_seconds=60)
    assert jobs.reconcile_expired_leases(session, now=utcnow() + dt.timedelta(seconds=5)) == []
    assert jobs.get_job(session, job.id).state == "running"
