"""`stylegan serve` as a user runs it: a real subprocess on the embedded default (SQLite, the embedded
Redis, local storage) with its one real worker process, driven over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import free_port, wait_for
from worker.settings import Settings

pytestmark = pytest.mark.integration

STYLEGAN = Path(sys.executable).with_name("stylegan")
READY_TIMEOUT_S = 90.0
# The worker's warm-shutdown grace is 30 s; a clean stop of an idle service takes a few seconds.
STOP_TIMEOUT_S = 45.0


class Serve:
    # Every serve a test started, so a test that fails half-way still leaves no process behind.
    started: list[Serve] = []

    def __init__(self, data_dir: Path, log: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STYLEGAN_")}
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(STYLEGAN), "serve", "--port", str(self.port), "--data-dir", str(data_dir), *extra],
                env={**clean, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})},
                cwd=data_dir.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.http = httpx.Client(base_url=self.base, timeout=10)
        Serve.started.append(self)

    def wait_ready(self, workers: bool = True) -> None:
        """Until /readyz is 200; with `workers=False` (serve --no-worker), until only the workers check
        fails, since nothing here starts one."""

        def ready() -> bool:
            assert self.process.poll() is None, f"serve exited early:\n{self.log.read_text()[-4000:]}"
            try:
                response = self.http.get("/readyz")
            except httpx.TransportError:
                return False
            if workers:
                return response.status_code == 200
            return response.status_code == 503 and response.json()["failed"] == ["workers"]

        wait_for(ready, READY_TIMEOUT_S, "/readyz to answer 200", interval=0.2)

    def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(f"/v1/jobs/{job_id}").json()
        return body

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"serve did not stop within {STOP_TIMEOUT_S} s:\n{self.log.read_text()[-4000:]}")


@pytest.fixture(autouse=True)
def no_serve_outlives_its_test() -> Iterator[None]:
    yield
    while Serve.started:
        serve = Serve.started.pop()
        if serve.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(serve.process.pid, signal.SIGKILL)
            serve.process.wait()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def serve_log(tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "serve.log"
    yield log
    print(log.read_text(errors="replace")[-6000:] if log.exists() else "(no serve log)")


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (Linux)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes_running(text: str) -> list[int]:
    """Every live process on this machine whose command line contains `text` (Linux)."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return sorted(pid for pid in pids if text in cmdline_of(pid) and alive(pid))


def job_row(data_dir: Path, job_id: str) -> dict[str, Any]:
    """Read the job straight from the SQLite file, after the service is gone."""
    path = Settings(data_dir=data_dir).effective_database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT state, attempts, progress FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert row is not None
    return dict(row)


def test_serve_runs_a_probe_and_stops_cleanly(data_dir: Path, serve_log: Path) -> None:
    serve = Serve(data_dir, serve_log)
    serve.wait_ready()
    checks = serve.http.get("/readyz").json()["checks"]
    assert all(check["ok"] for check in checks.values())
    assert data_dir.joinpath("broker").is_dir(), "the embedded broker lives in the data directory"

    created = serve.http.post("/v1/jobs", json={"kind": "probe", "params": {"seconds": 0.5}})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    job = wait_for(lambda: (j := serve.job(job_id))["state"] == "succeeded" and j, 60, "the probe to succeed")
    worker_pid = job["result"]["pid"]
    assert worker_pid != serve.process.pid and alive(worker_pid)
    broker_pid = int((data_dir / "broker" / "redis.pid").read_text())
    assert alive(broker_pid)

    assert serve.stop(signal.SIGTERM) == 0
    wait_for(lambda: not alive(worker_pid) and not alive(broker_pid), 10, "worker and broker to exit")


def test_ctrl_c_lets_the_running_job_finish(data_dir: Path, serve_log: Path) -> None:
    serve = Serve(data_dir, serve_log)
    serve.wait_ready()
    job_id = serve.http.post("/v1/jobs", json={"kind": "probe", "params": {"seconds": 3}}).json()["id"]
    wait_for(lambda: serve.job(job_id)["state"] == "running", 60, "the probe to start")

    # Ctrl-C: the worker gets a warm shutdown, so the job it holds completes instead of being lost.
    assert serve.stop(signal.SIGINT) == 0
    row = job_row(data_dir, job_id)
    assert row["state"] == "succeeded" and row["attempts"] == 1


def test_queued_job_survives_a_restart_of_serve(data_dir: Path, serve_log: Path) -> None:
    # First run: API and broker only, so the job can only wait in the embedded broker's queue.
    first = Serve(data_dir, serve_log, "--no-worker")
    first.wait_ready(workers=False)
    job_id = first.http.post("/v1/jobs", json={"kind": "probe", "params": {"seconds": 0.1}}).json()["id"]
    time.sleep(0.5)
    assert first.job(job_id)["state"] == "queued"
    assert first.stop(signal.SIGTERM) == 0
    assert job_row(data_dir, job_id)["state"] == "queued"

    # Second run with its worker: the job id comes back out of the broker's append-only file.
    second = Serve(data_dir, serve_log)
    try:
        second.wait_ready()
        job = wait_for(
            lambda: (j := second.job(job_id))["state"] in {"succeeded", "failed"} and j,
            60,
            "the job to finish",
        )
        assert job["state"] == "succeeded" and job["attempts"] == 1
    finally:
        assert second.stop(signal.SIGTERM) == 0


def test_a_busy_worker_is_killed_after_the_grace_period(data_dir: Path, serve_log: Path) -> None:
    serve = Serve(data_dir, serve_log, "--shutdown-grace", "1")
    serve.wait_ready()
    job_id = serve.http.post("/v1/jobs", json={"kind": "probe", "params": {"seconds": 120}}).json()["id"]
    wait_for(lambda: serve.job(job_id)["progress"] > 0, 60, "the long probe to report progress")
    spawned = descendants(serve.process.pid)
    assert len(spawned) >= 3, "serve should have a broker, a worker and its pool child"

    started = time.monotonic()
    assert serve.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 20, "the 120 s job must not hold up the stop"
    # Killed children may linger a moment as zombies until init reaps them.
    wait_for(lambda: not [pid for pid in spawned if alive(pid)], 10, f"processes {spawned} to be gone")
    # The job was not finished by anyone: it stays running until its lease expires and it is re-run.
    assert job_row(data_dir, job_id)["state"] == "running"
    assert "killing it" in serve_log.read_text()


def live_workers(serve: Serve) -> dict[str, int]:
    """queue -> pid of the live worker serving it, from GET /v1/workers."""
    items = serve.http.get("/v1/workers").json()["items"]
    return {queue: item["pid"] for item in items for queue in item["queues"]}


def demo_face(serve: Serve) -> httpx.Response:
    (demo,) = [m for m in serve.http.get("/v1/models").json()["items"] if m["demo"]]
    return serve.http.get(f"/v1/models/{demo['id']}/images/42.png")


# Heartbeats of 1 s, so that a dead worker leaves /v1/workers within 2.5 s instead of 25 s.
FAST_BEATS = {"STYLEGAN_HEARTBEAT_SECONDS": "1", "STYLEGAN_JOB_LEASE_SECONDS": "4"}


def test_a_killed_worker_is_reported_and_restarted(data_dir: Path, serve_log: Path) -> None:
    serve = Serve(data_dir, serve_log, env=FAST_BEATS)
    try:
        serve.wait_ready()
        workers = live_workers(serve)
        assert set(workers) == {"inference", "training"} and workers["inference"] != workers["training"]
        listed = serve.http.get("/v1/workers").json()["items"]
        assert {item["device"] for item in listed} == {"cpu"}
        first = demo_face(serve)
        assert first.status_code == 200 and first.headers["content-type"] == "image/png"

        def loaded() -> list[str]:
            items = serve.http.get("/v1/workers").json()["items"]
            return [m for item in items if "inference" in item["queues"] for m in item["loaded_models"]]

        # The next heartbeat reports the model the face loaded.
        assert len(wait_for(loaded, 10, "the demo model to show as loaded")) == 1

        old = workers["inference"]
        os.killpg(old, signal.SIGKILL)  # as the OOM killer would
        started = time.monotonic()
        new = wait_for(
            lambda: (pid := live_workers(serve).get("inference")) not in (None, old) and pid,
            60,
            "a new inference worker",
        )
        print(f"inference worker back {time.monotonic() - started:.1f} s after SIGKILL (pid {old} -> {new})")
        assert not alive(old)
        assert "the inference worker exited with code -9" in serve_log.read_text()
        again = demo_face(serve)
        assert again.status_code == 200 and again.content == first.content
    finally:
        assert serve.stop(signal.SIGTERM) == 0


def test_sigkill_of_serve_takes_workers_and_broker_along_and_a_restart_runs_one_set(
    data_dir: Path, serve_log: Path
) -> None:
    serve = Serve(data_dir, serve_log)
    serve.wait_ready()
    spawned = descendants(serve.process.pid)
    broker_pid = int((data_dir / "broker" / "redis.pid").read_text())
    assert broker_pid in spawned and set(live_workers(serve).values()) <= set(spawned)

    serve.process.kill()  # SIGKILL: nothing runs in serve to stop its children
    serve.process.wait()
    started = time.monotonic()
    wait_for(lambda: not [pid for pid in spawned if alive(pid)], 15, f"processes {spawned} to be gone")
    print(f"serve's {len(spawned)} processes gone {time.monotonic() - started:.1f} s after its SIGKILL")

    second = Serve(data_dir, serve_log)
    try:
        second.wait_ready()
        # One set, the new serve's: one broker for this data directory, one worker per queue.
        port = json.loads((data_dir / "broker" / "broker.json").read_text())["port"]
        brokers = processes_running(f"redis-server 127.0.0.1:{port}")
        assert brokers == [int((data_dir / "broker" / "redis.pid").read_text())]
        workers = processes_running("-m worker --queues")
        parents = {cmdline.split("--parent-pid ")[1].split()[0] for cmdline in map(cmdline_of, workers)}
        assert len(workers) == 2 and parents == {str(second.process.pid)}, workers
        assert not set(brokers + workers) & set(spawned)
        assert demo_face(second).status_code == 200
    finally:
        assert second.stop(signal.SIGTERM) == 0


def test_a_second_serve_on_the_same_data_dir_is_refused(
    data_dir: Path, serve_log: Path, tmp_path: Path
) -> None:
    first = Serve(data_dir, serve_log, "--no-worker")
    try:
        first.wait_ready(workers=False)
        second_log = tmp_path / "second.log"
        second = Serve(data_dir, second_log, "--no-worker")
        assert second.process.wait(60) == 2
        (line,) = second_log.read_text().strip().splitlines()
        assert line.startswith("stylegan serve: error: another `stylegan serve` (pid ")
        assert str(first.process.pid) in line
        assert first.process.poll() is None and first.http.get("/healthz").status_code == 200
    finally:
        assert first.stop(signal.SIGTERM) == 0


def test_a_worker_that_cannot_start_makes_serve_exit_non_zero_with_its_last_line(
    data_dir: Path, serve_log: Path
) -> None:
    # A CPU machine asked for CUDA: the inference worker refuses at every start.
    serve = Serve(data_dir, serve_log, env={"STYLEGAN_INFERENCE_DEVICE": "cuda"})
    code = serve.process.wait(180)
    log = serve_log.read_text()
    assert code == 1, log[-4000:]
    assert log.count("the inference worker exited with code 2") >= 4
    last = log.strip().splitlines()
    assert any(
        "the inference worker exited 5 times in a row" in line and "CUDA is not available" in line
        for line in last
    ), log[-4000:]
    assert "Traceback" not in log
