"""Concurrent moves on PostgreSQL: the conditional UPDATE lets exactly one contender win."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from worker import jobs
from worker.db.migrate import upgrade_head
from worker.db.session import make_engine, make_session_factory

CONTENDERS = 8

pytestmark = pytest.mark.integration


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
        t.join(30)
    return results


def test_concurrent_claims_have_one_winner(fresh_postgres_url: str) -> None:
    upgrade_head(fresh_postgres_url)
    engine = make_engine(fresh_postgres_url, pool_size=CONTENDERS)
    sessions = make_session_factory(engine)
    for _ in range(5):  # several rounds: a lucky interleaving must not pass by chance
        with sessions() as s:
            job_id = jobs.create_job(s, kind="probe", params={}).id

        def claim(i: int, job_id: str = job_id) -> object:
            with sessions() as s:
                return jobs.claim(s, job_id, f"w{i}", lease_seconds=30)

        results = _race(CONTENDERS, claim)
        winners = [r for r in results if isinstance(r, jobs.Job)]
        assert len(winners) == 1, results
        assert all(r is None for r in results if r is not winners[0])
        with sessions() as s:
            job = jobs.get_job(s, job_id)
        assert job.attempts == 1 and job.worker_id == winners[0].worker_id
    engine.dispose()


def test_concurrent_idempotent_submits_make_one_job(fresh_postgres_url: str) -> None:
    upgrade_head(fresh_postgres_url)
    engine = make_engine(fresh_postgres_url, pool_size=CONTENDERS)
    sessions = make_session_factory(engine)

    def submit(_: int) -> object:
        with sessions() as s:
            return jobs.create_job(s, kind="probe", params={"seconds": 1}, idempotency_key="once").id

    results = _race(CONTENDERS, submit)
    assert all(isinstance(r, str) for r in results), results
    assert len(set(results)) == 1
    with sessions() as s:
        assert jobs.list_jobs(s, owner_key=None)[1] == 1
    engine.dispose()
