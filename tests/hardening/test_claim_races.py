"""Claim races on both databases, and a model-checked state machine over the lease protocol.

Each move of a job is one conditional UPDATE (worker/jobs.py); these tests hold that to account:
1000 jobs, each claimed by several threads at once (0 double claims, on PostgreSQL and on the embedded
SQLite file), and a Hypothesis RuleBasedStateMachine that interleaves submit, claim, heartbeat, lease
expiry, reclaim, cancel and completion and compares every row with a plain-Python model after each step.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker import jobs
from worker.db.migrate import upgrade_head
from worker.db.models import Job, new_id
from worker.db.session import make_engine, make_session_factory
from worker.jobs import JobState

CONTENDERS = 4
TRIALS = 1000


def _race(n: int, attempt: Callable[[int], object]) -> list[object]:
    """Run `attempt(i)` in n threads released together; return what each got (or raised)."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = attempt(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


@pytest.fixture(params=["postgresql", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        url = request.getfixturevalue("fresh_postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    upgrade_head(url)
    engine = make_engine(url, pool_size=CONTENDERS)
    yield engine
    engine.dispose()


@pytest.mark.integration
def test_1000_contended_claims_have_one_winner_each(database: Engine) -> None:
    sessions = make_session_factory(database)
    with sessions() as s:
        # The rows are written directly (one commit): the trials are about claim, not submit.
        ids = [new_id() for _ in range(TRIALS)]
        s.execute(
            sa.insert(Job),
            [{"id": i, "kind": "probe", "queue": "inference", "params": {}} for i in ids],
        )
        s.commit()

    def contend(i: int) -> object:
        # Half the threads walk the ids forwards and half backwards, and each shuffles small windows,
        # so every job is fought over by threads arriving in different orders.
        order = ids if i % 2 == 0 else ids[::-1]
        rng = random.Random(i)
        won: list[str] = []
        with sessions() as s:
            for start in range(0, len(order), 8):
                window = list(order[start : start + 8])
                rng.shuffle(window)
                for job_id in window:
                    if jobs.claim(s, job_id, f"w{i}", lease_seconds=30) is not None:
                        won.append(job_id)
        return won

    started = time.monotonic()
    results = _race(CONTENDERS, contend)
    elapsed = time.monotonic() - started
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    wins = [job_id for r in results for job_id in r]  # type: ignore[attr-defined]
    double = len(wins) - len(set(wins))
    with sessions() as s:
        rows = s.execute(sa.select(Job.state, Job.attempts, Job.worker_id)).all()
    print(
        f"{database.dialect.name}: {TRIALS} jobs x {CONTENDERS} claimants in {elapsed:.1f} s; "
        f"claims won {len(wins)}, double claims {double}, "
        f"wins per thread {[len(r) for r in results]}"  # type: ignore[arg-type]
    )
    assert double == 0 and set(wins) == set(ids)
    assert all(state == "running" and attempts == 1 for state, attempts, _ in rows)
    # The row names the one winner: each worker id holds exactly the jobs its thread says it won.
    by_worker: dict[str, int] = {}
    for _, _, worker_id in rows:
        by_worker[worker_id] = by_worker.get(worker_id, 0) + 1
    assert by_worker == {f"w{i}": len(r) for i, r in enumerate(results) if r}  # type: ignore[arg-type]


@pytest.mark.integration
def test_concurrent_idempotent_submits_make_one_job(fresh_postgres_url: str) -> None:
    upgrade_head(fresh_postgres_url)
    engine = make_engine(fresh_postgres_url, pool_size=8)
    sessions = make_session_factory(engine)

    def submit(_: int) -> object:
        with sessions() as s:
            return jobs.create_job(s, kind="probe", params={"seconds": 1}, idempotency_key="once").id

    results = _race(8, submit)
    assert all(isinstance(r, str) for r in results), results
    assert len(set(results)) == 1
    with sessions() as s:
        assert jobs.list_jobs(s, owner_key=None)[1] == 1
    engine.dispose()


# --- the lease protocol, model-checked ---------------------------------------------------------------

# A lease is either live (an hour) or already over (a second in the past): expiry is then decided by
# the reconciler's clock alone, so the model needs no clock of its own.
LIVE, EXPIRED = 3600.0, -1.0

_template: Path | None = None
# What the runs exercised, summed over examples (printed, and checked to cover every move).
SEEN: Counter[str] = Counter()


def _fresh_database() -> tuple[Path, sessionmaker[Session], Engine]:
    """A migrated SQLite file per example: a copy of one migrated template (migrating takes ~0.3 s)."""
    global _template
    if _template is None:
        root = Path(tempfile.mkdtemp(prefix="stylegan-machine-"))
        _template = root / "template.sqlite3"
        upgrade_head(f"sqlite:///{_template}")
    root = Path(tempfile.mkdtemp(prefix="stylegan-machine-"))
    shutil.copyfile(_template, root / "jobs.sqlite3")
    engine = make_engine(f"sqlite:///{root / 'jobs.sqlite3'}")
    return root, make_session_factory(engine), engine


@dataclass
class ModelJob:
    """What the protocol says a job's row must hold."""

    state: JobState
    max_attempts: int
    attempts: int = 0
    holder: str | None = None
    live: bool = False
    cancel_requested: bool = False


class LeaseMachine(RuleBasedStateMachine):
    job_ids = Bundle("job_ids")

    def __init__(self) -> None:
        super().__init__()
        self.root, self.sessions, self.engine = _fresh_database()
        self.model: dict[str, ModelJob] = {}
        self.claims = 0
        self.stale_tokens: list[str] = []

    def teardown(self) -> None:
        self.engine.dispose()
        shutil.rmtree(self.root, ignore_errors=True)

    @rule(target=job_ids, max_attempts=st.integers(1, 3))
    def submit(self, max_attempts: int) -> str:
        with self.sessions() as s:
            job = jobs.create_job(s, kind="probe", params={}, max_attempts=max_attempts)
        self.model[job.id] = ModelJob(JobState.QUEUED, max_attempts)
        return job.id

    @rule(job_id=job_ids, live=st.booleans())
    def claim(self, job_id: str, live: bool) -> None:
        self.claims += 1
        token = f"worker/{self.claims}"
        with self.sessions() as s:
            got = jobs.claim(s, job_id, token, LIVE if live else EXPIRED)
        expected = self.model[job_id]
        if expected.state is not JobState.QUEUED:
            assert got is None, f"claimed a {expected.state} job"
            SEEN["claims refused"] += 1
            return
        assert got is not None and got.worker_id == token
        SEEN["reclaims" if expected.attempts else "first claims"] += 1
        expected.state, expected.holder, expected.live = JobState.RUNNING, token, live
        expected.attempts += 1

    @rule(job_id=job_ids, live=st.booleans(), stale=st.booleans(), data=st.data())
    def heartbeat(self, job_id: str, live: bool, stale: bool, data: st.DataObject) -> None:
        expected = self.model[job_id]
        token = expected.holder
        if stale or token is None:
            # A worker that lost the job (or never held it) beats anyway.
            token = data.draw(st.sampled_from([*self.stale_tokens, "worker/never"]))
        with self.sessions() as s:
            renewed = jobs.heartbeat(s, job_id, token, LIVE if live else EXPIRED)
        holds = expected.state is JobState.RUNNING and token == expected.holder
        assert renewed == holds
        SEEN["heartbeats kept" if holds else "heartbeats refused"] += 1
        if holds:
            expected.live = live

    @rule()
    def expire(self) -> None:
        with self.sessions() as s:
            requeued = jobs.reconcile_expired_leases(s)
        predicted = []
        for job_id, expected in self.model.items():
            if expected.state is not JobState.RUNNING or expected.live:
                continue
            assert expected.holder is not None
            self.stale_tokens.append(expected.holder)
            expected.holder = None
            if expected.cancel_requested:
                expected.state = JobState.CANCELED
            elif expected.attempts < expected.max_attempts:
                expected.state = JobState.QUEUED
                predicted.append(job_id)
            else:
                expected.state = JobState.FAILED
            SEEN[f"expired -> {expected.state.value}"] += 1
        assert sorted(requeued) == sorted(predicted)

    # Cancels are drawn a quarter as often as the other moves: a canceled job is out of the game, and at
    # full weight they ended most jobs before a lease could expire.
    @rule(job_id=job_ids, now=st.integers(0, 3))
    def cancel(self, job_id: str, now: int) -> None:
        if now:
            return
        expected = self.model[job_id]
        with self.sessions() as s:
            if expected.state in {JobState.SUCCEEDED, JobState.FAILED}:
                with pytest.raises(jobs.IllegalTransition):
                    jobs.request_cancel(s, job_id)
                SEEN["cancels refused"] += 1
                return
            job = jobs.request_cancel(s, job_id)
        SEEN[f"cancel of {expected.state.value}"] += 1
        if expected.state is JobState.QUEUED:
            expected.state = JobState.CANCELED
        if expected.state in {JobState.RUNNING, JobState.CANCELED}:
            expected.cancel_requested = True
        assert job.state == expected.state.value

    @rule(job_id=consumes(job_ids), stale=st.booleans(), outcome=st.sampled_from(["complete", "fail"]))
    def finish(self, job_id: str, stale: bool, outcome: str) -> None:
        expected = self.model[job_id]
        token = (self.stale_tokens[-1] if self.stale_tokens else "worker/never") if stale else expected.holder
        holds = expected.state is JobState.RUNNING and token is not None and token == expected.holder
        with self.sessions() as s:
            if not holds:
                with pytest.raises(jobs.LeaseLost):
                    jobs.complete(s, job_id, token or "worker/never", {})
                SEEN["finishes refused"] += 1
                return
            assert token is not None
            if outcome == "complete":
                jobs.complete(s, job_id, token, {})
                expected.state = JobState.SUCCEEDED
            else:
                jobs.fail(s, job_id, token, "boom")
                expected.state = JobState.FAILED
        expected.holder = None
        SEEN[f"finished {expected.state.value}"] += 1

    @invariant()
    def rows_match_the_model(self) -> None:
        with self.sessions() as s:
            rows = {j.id: j for j in s.scalars(sa.select(Job)).all()}
        assert set(rows) == set(self.model)
        for job_id, expected in self.model.items():
            row = rows[job_id]
            assert (row.state, row.attempts, row.cancel_requested) == (
                expected.state.value,
                expected.attempts,
                expected.cancel_requested,
            ), job_id
            assert row.attempts <= row.max_attempts
            if expected.state is JobState.RUNNING:
                assert row.worker_id == expected.holder and row.lease_expires_at is not None
            else:
                assert row.lease_expires_at is None, f"a {row.state} job kept a lease"


MOVES = (
    "reclaims",
    "heartbeats refused",
    "expired -> queued",
    "expired -> failed",
    "expired -> canceled",
    "cancel of running",
    "finishes refused",
    "finished succeeded",
)


def test_lease_protocol_matches_its_model() -> None:
    started = time.monotonic()
    runs = 0
    # First 100 derandomized runs (a failure there reproduces), then, while some move of the protocol
    # was never reached, up to 300 random ones: what derandomize draws differs between Hypothesis
    # versions and environments, and a rare move (an expiry after cancel) can be missed by one batch.
    for derandomize in (True, False, False, False):
        run_state_machine_as_test(
            LeaseMachine,
            settings=settings(
                max_examples=100,
                stateful_step_count=40,
                deadline=None,
                database=None,
                derandomize=derandomize,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
        runs += 100
        if all(SEEN[move] > 0 for move in MOVES):
            break
    print(
        f"lease state machine: {runs} runs in {time.monotonic() - started:.1f} s; "
        + ", ".join(f"{k} {v}" for k, v in sorted(SEEN.items()))
    )
    # The runs reached every move of the protocol, not only the easy ones.
    for move in MOVES:
        assert SEEN[move] > 0, (move, SEEN)
