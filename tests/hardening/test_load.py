"""Load (issue 12, item 3), on a real `stylegan serve` (embedded default: SQLite, the embedded broker, one
inference and one training worker process), loopback only, bounded in users and time.

test_sampling_under_load: USERS locust users (a subprocess: locust's gevent monkeypatching must stay
out of pytest) each sample images of the bundled demo model with no think time for RUN_SECONDS. Every
answer must be 200, 429 or 503, every 429/503 must carry Retry-After, and no request may go
unanswered; the p50/p99 of the admitted (200) requests come from locust's stats. Meanwhile a small
training job runs: its pace (images per second, from the worker's own progress events) with the load
on must stay within TRAINING_SLOWDOWN_BOUND of its pace just before, measured the same way.

test_open_event_streams_do_not_slow_readyz: STREAMS open SSE streams of a running job
(GET /v1/jobs/{id}/events), and the p99 of READYZ_PROBES sequential /readyz requests with them open is
compared with the p99 without them.

Why these bounds, on a CI box of two shared cores: locust, the API, the inference worker and the
training worker all compete for the same two cores, so the training job cannot keep its unloaded pace
(the OS shares the CPU); what must not happen is starvation (the training worker waiting on the API,
the broker or a database lock held by the sampling path). Measured here: 2.2x to 3.4x slower under
1000 users; 6x is outside what sharing the CPU between four busy processes explains and far inside a
stall. An open event stream is one awaiting coroutine and one indexed read every events_poll_seconds,
so 200 of them may cost /readyz a little, not seconds (measured: p50 +5 to +20 ms, p99 +70 to +200 ms
since stream polls have threads of their own, api/services/events.py; +180 to +280 ms before).

1000 users run reliably here (locust's own process takes about one core); the sampling rate limit is
raised to 200/s so that both refusals happen: the token bucket's 429 and, once the inference worker is
the bottleneck, the in-flight cap's 503.

Found by this test and fixed: sampling requests held their pooled database connection while waiting for
the inference worker, so 1000 users drained the pool and all but a few dozen requests got a 500 after
the pool's 30 s timeout (api/services/sampling.ask_inference now ends the transaction first, and an
exhausted pool is a 503 with Retry-After); and `serve`'s two workers each used every core for torch,
which on this machine made the training job 35x slower even without load (api/cli.py).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import PIL.Image
import pytest
import sqlalchemy as sa

from tests.servers import free_port, wait_for

pytestmark = pytest.mark.integration

STYLEGAN = Path(sys.executable).with_name("stylegan")
USERS = 1000
SPAWN_RATE = 250  # users per second: all of them within 4 s
RUN_SECONDS = 25
BASELINE_SECONDS = 20  # the training job's pace without load is measured over this long
TRAINING_SLOWDOWN_BOUND = 6.0
STREAMS = 200
READYZ_PROBES = 200
READYZ_P99_BOUND_S = 0.5  # with the streams open: at most this much above the p99 without them


class Serve:
    """`stylegan serve` in its own process group, on a free loopback port."""

    def __init__(self, data_dir: Path, log: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = log
        self.process = subprocess.Popen(
            [str(STYLEGAN), "serve", "--port", str(self.port), "--data-dir", str(data_dir)],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 180.0) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, f"serve exited:\n{self.log.read_text()[-4000:]}"
            try:
                return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, "stylegan serve /readyz", interval=0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def png(seed: int, size: int = 32) -> bytes:
    pixels = np.random.RandomState(seed).randint(0, 256, (size, size, 3), np.uint8)
    out = io.BytesIO()
    PIL.Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    root = tmp_path_factory.mktemp("load")
    env = {
        # Above the default 20/s, so that both refusals happen: the token bucket (429) and the in-flight
        # cap of the API process (503) once the inference worker is the bottleneck.
        "STYLEGAN_SAMPLE_RATE_PER_SECOND": "200",
        "STYLEGAN_SAMPLE_BURST": "200",
    }
    server = Serve(root / "data", root / "serve.log", env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        print(f"\n--- serve.log (tail)\n{server.log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def http(serve: Serve) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def training_job(serve: Serve, http: httpx.Client) -> Iterator[str]:
    """A small from-scratch training job, running (past its first progress) when the tests begin."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(8):
            zf.writestr(f"{i}.png", png(i))
    made = http.post("/v1/datasets", files={"file": ("d.zip", buf.getvalue())})
    assert made.status_code == 201, made.text
    body = {
        "dataset_id": made.json()["id"], "cfg": "stylegan2", "kimg": 1000, "batch": 4, "cbase": 256,
        "cmax": 32, "tick": 0.02, "snap": 10000, "aug": "noaug", "preview_images": 1,
    }  # fmt: skip
    job = http.post("/v1/training-jobs", json=body)
    assert job.status_code == 202, job.text
    job_id: str = job.json()["id"]

    def started() -> bool:
        detail = http.get(f"/v1/training-jobs/{job_id}").json().get("progress_detail") or {}
        return int(detail.get("images_seen") or 0) > 0

    wait_for(started, 120, "the training job's first progress")
    yield job_id
    http.post(f"/v1/jobs/{job_id}/cancel")


def progress_events(serve: Serve, job_id: str) -> list[tuple[float, int]]:
    """(time, images seen) of the job's progress events, as the worker wrote them."""
    engine = sa.create_engine(f"sqlite:///{(serve.data_dir / 'stylegan.sqlite3').resolve()}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT created_at, data FROM job_events WHERE job_id = :j AND type = 'progress'"),
                {"j": job_id},
            ).all()
    finally:
        engine.dispose()
    out = []
    for created, data in rows:
        when = created if isinstance(created, dt.datetime) else dt.datetime.fromisoformat(str(created))
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        images = json.loads(data).get("images_seen") if isinstance(data, str) else data.get("images_seen")
        if images is not None:
            out.append((when.timestamp(), int(images)))
    return sorted(out)


def images_at(events: list[tuple[float, int]], t: float) -> float:
    """Images seen at time `t`, interpolated between the progress events around it (the worker writes
    one per tick and one every 5 s within a tick)."""
    before = [(s, n) for s, n in events if s <= t]
    after = [(s, n) for s, n in events if s >= t]
    assert before and after, f"no progress event on both sides of {t}: {events[:3]}...{events[-3:]}"
    (t0, n0), (t1, n1) = before[-1], after[0]
    return float(n0) if t1 == t0 else n0 + (n1 - n0) * (t - t0) / (t1 - t0)


def pace(events: list[tuple[float, int]], start: float, end: float) -> float:
    """The training job's images per second over [start, end]."""
    return (images_at(events, end) - images_at(events, start)) / (end - start)


def events_past(serve: Serve, job_id: str, t: float, timeout: float = 60.0) -> list[tuple[float, int]]:
    """The job's progress events, once one was written after `t` (needed to interpolate at `t`)."""
    return wait_for(
        lambda: (e := progress_events(serve, job_id)) and e[-1][0] >= t and e or None,
        timeout,
        "a training progress event after the load",
        interval=0.5,
    )


def locust_stats(prefix: Path) -> dict[str, dict[str, str]]:
    with Path(f"{prefix}_stats.csv").open() as fh:
        return {row["Name"]: row for row in csv.DictReader(fh)}


def test_sampling_under_load(serve: Serve, http: httpx.Client, training_job: str, tmp_path: Path) -> None:
    models = http.get("/v1/models").json()["items"]
    assert models, "no demo model registered"
    model_id = models[0]["id"]
    assert http.get(f"/v1/models/{model_id}/images/1.png").status_code == 200  # loaded in the worker

    baseline_start = time.time()
    time.sleep(BASELINE_SECONDS)
    load_start = time.time()
    report = tmp_path / "report.json"
    prefix = tmp_path / "locust"
    locust = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "--headless",
            "-f",
            str(Path(__file__).with_name("locustfile_sampling.py")),
            "--host",
            serve.url,
            "--users",
            str(USERS),
            "--spawn-rate",
            str(SPAWN_RATE),
            "--run-time",
            f"{RUN_SECONDS}s",
            "--stop-timeout",
            "30",
            "--csv",
            str(prefix),
            "--only-summary",
        ],  # fmt: skip
        env={**os.environ, "LOAD_MODEL_ID": model_id, "LOAD_REPORT": str(report)},
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS + 120,
    )
    load_end = time.time()
    assert report.exists(), f"locust wrote no report (rc {locust.returncode}):\n{locust.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(report.read_text())
    stats = locust_stats(prefix)
    statuses = {int(k): v for k, v in result["statuses"].items()}
    admitted = stats.get("sample 200", {})

    events = events_past(serve, training_job, load_end)
    alone = pace(events, baseline_start, load_start)
    # From the moment every user has been spawned to the end of the run.
    loaded = pace(events, load_start + USERS / SPAWN_RATE, load_end)
    total = sum(statuses.values())
    print(
        f"\n{USERS} users for {RUN_SECONDS} s: {total} requests, statuses {dict(sorted(statuses.items()))}, "
        f"missing Retry-After {result['missing_retry_after']}"
        f"\nadmitted (200): p50 {admitted.get('50%')} ms, p99 {admitted.get('99%')} ms, "
        f"{admitted.get('Requests/s')} req/s"
        f"\ntraining: {alone:.2f} images/s alone, {loaded:.2f} images/s under load: "
        f"{alone / max(loaded, 1e-9):.2f}x slower (bound {TRAINING_SLOWDOWN_BOUND}x)"
    )
    assert not result["bad_bodies"], result["bad_bodies"]
    assert set(statuses) <= {200, 429, 503}, statuses  # 0 would be a request without an answer
    assert not result["missing_retry_after"], result["missing_retry_after"]
    assert statuses.get(200, 0) > 0, statuses
    assert total >= USERS, f"fewer requests than users: {total}"
    assert loaded * TRAINING_SLOWDOWN_BOUND >= alone, (alone, loaded)


def readyz_latencies(url: str, n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(n):
            start = time.perf_counter()
            response = client.get("/readyz")
            out.append(time.perf_counter() - start)
            assert response.status_code == 200, response.text
    return out


def test_open_event_streams_do_not_slow_readyz(serve: Serve, training_job: str) -> None:
    without = readyz_latencies(serve.url, READYZ_PROBES)

    opened = 0
    stop = asyncio.Event()
    ready = threading.Event()
    errors: list[str] = []

    async def hold(client: httpx.AsyncClient) -> None:
        nonlocal opened
        try:
            async with client.stream("GET", f"/v1/jobs/{training_job}/events") as response:
                assert response.status_code == 200, response.status_code
                opened += 1
                if opened == STREAMS:
                    ready.set()
                async for _ in response.aiter_bytes():
                    if stop.is_set():
                        return
        except Exception as exc:  # noqa: BLE001 - reported below, with the count of streams held
            errors.append(repr(exc))
            ready.set()

    async def streams() -> None:
        limits = httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=serve.url, timeout=None, limits=limits) as client:
            tasks = [asyncio.create_task(hold(client)) for _ in range(STREAMS)]
            await asyncio.get_running_loop().run_in_executor(None, stop_requested.wait)
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    stop_requested = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(streams()), daemon=True)
    thread.start()
    try:
        assert ready.wait(60), f"only {opened} of {STREAMS} streams opened"
        assert not errors and opened == STREAMS, (opened, errors[:5])
        time.sleep(1.0)
        with_streams = readyz_latencies(serve.url, READYZ_PROBES)
        still_open = opened
    finally:
        stop_requested.set()
        thread.join(30)
    p99_without, p99_with = p(without, 0.99), p(with_streams, 0.99)
    print(
        f"\n/readyz over {READYZ_PROBES} requests: p50 {statistics.median(without) * 1000:.1f} ms / p99 "
        f"{p99_without * 1000:.1f} ms without streams; p50 {statistics.median(with_streams) * 1000:.1f} ms / "
        f"p99 {p99_with * 1000:.1f} ms with {still_open} open event streams (bound: +{READYZ_P99_BOUND_S * 1000:.0f} ms)"
    )
    assert p99_with <= p99_without + READYZ_P99_BOUND_S, (p99_without, p99_with)
