"""Two API processes (uvicorn on two ports) sharing one PostgreSQL and one Redis enforce one sampling
rate limit, one in-flight cap and one job quota: counted per process, each would let through its own.

No inference worker runs: a sampling request that passes the limits is answered 503 "no inference
worker" at once (or, once a presence row says a worker listens, waits out sample_timeout_seconds),
which is what tells it apart from one the limits refused (429, or 503 naming the in-flight setting)."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from api.deps import owner_key_for
from api.ratelimit import IN_FLIGHT_KEY
from tests.api.test_projections_local import register_tiny_model
from tests.servers import ApiProcess, settings_env, wait_for
from worker.db.migrate import upgrade_head
from worker.presence import Presence, WorkerInfo
from worker.settings import Settings

pytestmark = pytest.mark.integration

KEY_A = "replica-test-key-aaaaaaaa"
KEY_B = "replica-test-key-bbbbbbbb"
BURST = 5
IN_FLIGHT = 2
QUOTA = 3


@dataclass
class Replicas:
    apis: list[ApiProcess]
    settings: Settings  # what the test itself uses to reach the shared database
    redis_url: str


@pytest.fixture
def replicas(tmp_path: Path, fresh_postgres_url: str, redis_url: str) -> Iterator[Replicas]:
    upgrade_head(fresh_postgres_url)
    # One data directory for all: the storage a load balancer's replicas share (here, a local folder).
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    common = {
        "data_dir": data_dir,
        "database_url": fresh_postgres_url,
        "broker_url": redis_url,
        "limits_redis_url": redis_url,
        "api_keys": f"{KEY_A},{KEY_B}",
        # 0.01 tokens/s: nothing refills during the test, so exactly BURST requests pass per key.
        "sample_rate_per_second": 0.01,
        "sample_burst": BURST,
        "sample_max_in_flight": IN_FLIGHT,
        "sample_timeout_seconds": 4,
        "quota_max_active_jobs": QUOTA,
    }
    apis = [ApiProcess(settings_env(**common), tmp_path, name=f"api{i}") for i in range(2)]
    try:
        for api in apis:
            api.wait_ready()
        yield Replicas(apis, Settings(data_dir=data_dir, database_url=fresh_postgres_url), redis_url)
    finally:
        for api in apis:
            api.stop()
        for api in apis:
            print(f"--- {api.log_path.name}\n{api.log_path.read_text(errors='replace')[-3000:]}")


def _get(api: ApiProcess, path: str, key: str) -> httpx.Response:
    return httpx.get(api.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_rate_limit_and_in_flight_cap_hold_across_two_processes(replicas: Replicas) -> None:
    apis = replicas.apis
    model_a = register_tiny_model(replicas.settings, owner_key=owner_key_for(KEY_A))
    path_a = f"/v1/models/{model_a}/images/1.png"

    # Rate limit: 2 * BURST requests from one key, alternating between the processes. Counted per
    # process, each would see BURST of them and let all through; one bucket lets BURST through in all.
    answers = [_get(apis[i % 2], path_a, KEY_A) for i in range(2 * BURST)]
    passed = [r for r in answers if r.status_code != 429]
    assert len(passed) == BURST, [(r.status_code, r.text[:120]) for r in answers]
    assert all(r.status_code == 503 and "no inference worker" in r.json()["detail"] for r in passed)
    refused = [r for r in answers if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert "STYLEGAN_SAMPLE_BURST" in refused[0].json()["detail"]

    # In-flight cap: a presence row says an inference worker listens, but none answers, so each request
    # that passes waits sample_timeout_seconds. IN_FLIGHT of them on process 0 fill the shared cap; one
    # more on process 1, whose own count is 0, is refused at once. KEY_B has a bucket of its own.
    Presence(
        replicas.settings,
        WorkerInfo(name="silent@test", queues=["inference"], device="cpu", concurrency=1, loaded_models=list),
    ).beat_once()
    # Each process asks the database whether an inference worker lives at most once a second
    # (worker/presence.py QueueWatch); the answers cached during the rate-limit part said none.
    time.sleep(1.5)
    model_b = register_tiny_model(replicas.settings, owner_key=owner_key_for(KEY_B))
    path_b = f"/v1/models/{model_b}/images/1.png"
    store = redis.Redis.from_url(replicas.redis_url)
    with concurrent.futures.ThreadPoolExecutor(IN_FLIGHT) as pool:
        waiting = [pool.submit(_get, apis[0], path_b, KEY_B) for _ in range(IN_FLIGHT)]
        wait_for(lambda: store.zcard(IN_FLIGHT_KEY) == IN_FLIGHT, 20, "the first requests to start waiting")
        busy = _get(apis[1], path_b, KEY_B)
        assert busy.status_code == 503, busy.text
        assert "STYLEGAN_SAMPLE_MAX_IN_FLIGHT" in busy.json()["detail"]
        assert busy.headers["retry-after"] == "1"
        for future in waiting:
            timed_out = future.result(60)
            assert timed_out.status_code == 503, timed_out.text
            assert "no inference worker answered" in timed_out.json()["detail"]
    # The holds are released when the requests end: the next request waits again instead of being refused.
    assert store.zcard(IN_FLIGHT_KEY) == 0
    again = _get(apis[1], path_b, KEY_B)
    assert "no inference worker answered" in again.json()["detail"], again.text
    store.close()


def test_job_quota_holds_across_two_processes(replicas: Replicas) -> None:
    """3 * QUOTA probe jobs at once from one key over both processes: exactly QUOTA are queued."""

    def submit(i: int) -> httpx.Response:
        return httpx.post(
            replicas.apis[i % 2].url + "/v1/jobs",
            json={"kind": "probe", "params": {}},
            headers={"Authorization": f"Bearer {KEY_A}"},
            timeout=30,
        )

    with concurrent.futures.ThreadPoolExecutor(3 * QUOTA) as pool:
        answers = list(pool.map(submit, range(3 * QUOTA)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [202] * QUOTA + [429] * (2 * QUOTA), [(r.status_code, r.text[:120]) for r in answers]
    assert all(
        "STYLEGAN_QUOTA_MAX_ACTIVE_JOBS" in r.json()["detail"] for r in answers if r.status_code == 429
    )
