"""Outages of what the service stands on: PostgreSQL restarting, the disk filling up, a process killed
in the middle of a write, SQLite written by the API and the workers at once.

- PostgreSQL stopped under a running API and worker: every request that needs the database is a 503
  problem+json with Retry-After (never a 500, never a hang), /healthz stays 200; once PostgreSQL is back
  the same API and worker serve and run jobs again, without a restart.
- A full disk while an artifact or a training checkpoint is written: the write fails with the OS's
  error, the file keeps its old content (or stays absent), and no temporary file is left behind.
- SIGKILL while a file is being stored: afterwards the file is the old one or the new one, whole.
- SQLite with the API and two worker processes writing at once: no "database is locked", and after a
  worker is SIGKILLed mid-job the file passes PRAGMA integrity_check.

Each test prints its figure.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from api.app import create_app
from gan.training.checkpoint import load_checkpoint, save_checkpoint
from tests.hardening.stacks import FAST, runs_of
from tests.servers import (
    PostgresServer,
    RedisServer,
    WorkerProcesses,
    finished,
    postgres_binary,
    settings_env,
    wait_for,
    wait_job,
)
from worker.db.migrate import upgrade_head
from worker.db.session import make_engine, make_session_factory
from worker.settings import Settings
from worker.storage.local import LocalStorage

pytestmark = pytest.mark.integration


def probe(seconds: float, queue: str = "training") -> dict[str, Any]:
    return {"kind": "probe", "params": {"seconds": seconds, "queue": queue}}


# -- PostgreSQL restart ---------------------------------------------------------------------------------


def _pg_ctl(server: PostgresServer, *args: str) -> None:
    done = server._run(str(postgres_binary("pg_ctl")), "-D", str(server.root / "data"), *args)
    assert done.returncode == 0, done.stdout + done.stderr


def _restart_options(server: PostgresServer) -> str:
    """The server's own command-line options (postmaster.opts), to start it again as it was."""
    words = shlex.split((server.root / "data" / "postmaster.opts").read_text())
    options = words[1:]  # without the postgres binary
    i = options.index("-D")
    return shlex.join(options[:i] + options[i + 2 :])


@pytest.fixture
def postgres_stack(tmp_path: Path) -> Iterator[tuple[PostgresServer, dict[str, Any], WorkerProcesses]]:
    """A PostgreSQL of this test's own (it is stopped and started again) and a Redis broker."""
    logs = tmp_path / "logs"
    logs.mkdir()
    server = PostgresServer()
    redis = RedisServer()
    workers = WorkerProcesses(logs)
    try:
        server.start()
        redis.start()
        values = {
            "data_dir": tmp_path / "data",
            "database_url": server.create_database(),
            "broker_url": redis.url,
            **FAST,
        }
        upgrade_head(values["database_url"])
        yield server, values, workers
    finally:
        workers.stop_all()
        print(workers.logs()[-3000:])
        redis.stop()
        server.stop()


def test_postgres_restart_is_503_meanwhile_and_recovers_without_a_restart(
    postgres_stack: tuple[PostgresServer, dict[str, Any], WorkerProcesses],
) -> None:
    server, values, workers = postgres_stack
    workers.spawn(settings_env(**values), queues="training")
    with TestClient(create_app(Settings(**values)), raise_server_exceptions=False) as http:
        first = http.post("/v1/jobs", json=probe(0.1)).json()["id"]
        assert wait_job(http, first, finished)["state"] == "succeeded"

        options = _restart_options(server)
        _pg_ctl(server, "-m", "immediate", "stop")
        stopped_at = time.monotonic()
        answers = {}
        slowest = 0.0
        for method, path, body in [
            ("GET", "/v1/models", None),
            ("GET", "/v1/jobs", None),
            ("GET", f"/v1/jobs/{first}", None),
            ("POST", "/v1/jobs", probe(0.1)),
            ("GET", "/v1/datasets", None),
            ("GET", "/readyz", None),
        ]:
            started = time.monotonic()
            response = http.request(method, path, json=body)
            slowest = max(slowest, time.monotonic() - started)
            answers[f"{method} {path}"] = response
        assert http.get("/healthz").status_code == 200
        # Long enough for the worker's heartbeat, lease and reconciler threads to meet the outage too.
        time.sleep(3)
        for name, response in answers.items():
            assert response.status_code == 503, (name, response.status_code, response.text)
            assert response.headers["content-type"].startswith("application/problem+json"), name
            if name != "GET /readyz":
                assert int(response.headers["retry-after"]) >= 1, name
                assert "database" in response.json()["detail"], (name, response.text)

        _pg_ctl(server, "-l", str(server.root / "postgres.log"), "-o", options, "-w", "start")
        back_at = time.monotonic()
        wait_for(lambda: http.get("/v1/models").status_code == 200, 30, "the API to reach PostgreSQL again")
        recovered = time.monotonic() - back_at
        # The worker kept running through the outage and takes jobs again.
        second = http.post("/v1/jobs", json=probe(0.1)).json()["id"]
        assert wait_job(http, second, finished, timeout=60)["state"] == "succeeded"
        sessions = make_session_factory(make_engine(values["database_url"]))
        assert runs_of(sessions, first) == 1 and runs_of(sessions, second) == 1
    print(
        f"PostgreSQL down {back_at - stopped_at:.1f} s: {len(answers)} requests answered 503 "
        f"(slowest {slowest:.2f} s); API serving again {recovered:.2f} s after it came back, "
        "and the same worker ran the next job"
    )


# -- full disk ------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a disk that fills up. Mounting needs root, as the CI runs; fails if it cannot."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs to fill up (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _read(storage: LocalStorage, key: str) -> bytes:
    with storage.open(key) as f:
        return f.read()


def _leftovers(root: Path, keep: set[str]) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name not in keep)


def test_a_full_disk_keeps_the_old_artifact_and_leaves_no_partial_file(small_disk: Path) -> None:
    storage = LocalStorage(small_disk / "data")
    old = os.urandom(1024 * 1024)
    key = storage.put_bytes("artifacts/video.mp4", old)
    too_big = os.urandom(5 * 1024 * 1024)
    with pytest.raises(OSError) as raised:
        storage.put_bytes(key, too_big)
    assert raised.value.errno == errno.ENOSPC
    assert _read(storage, key) == old
    # The same through a file put (a streamed upload or a rendered artifact).
    source = Path("/dev/shm") / f"stylegan-big-{uuid.uuid4().hex}"
    source.write_bytes(too_big)
    try:
        with pytest.raises(OSError):
            storage.put_file("artifacts/other.bin", source)
    finally:
        source.unlink()
    assert not storage.exists("artifacts/other.bin")
    left = _leftovers(small_disk, {"video.mp4"})
    assert left == [], f"partial files left on the full disk: {left}"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    print(
        f"full disk: a 5 MiB write failed with ENOSPC, the 1 MiB artifact kept, {free // 1024} KiB free after"
    )


def test_a_full_disk_keeps_the_last_training_checkpoint(small_disk: Path) -> None:
    path = small_disk / "run" / "checkpoint.pt"
    path.parent.mkdir()
    save_checkpoint(path, {"G.w": torch.zeros(1000)}, {"kimg": 1.0})
    with pytest.raises(OSError) as raised:
        save_checkpoint(path, {"G.w": torch.zeros(2_000_000)}, {"kimg": 2.0})
    assert raised.value.errno == errno.ENOSPC
    kept = load_checkpoint(path)
    assert kept.meta["kimg"] == 1.0 and kept.tensors["G.w"].numel() == 1000
    assert _leftovers(small_disk, {"checkpoint.pt"}) == []
    print("full disk: an 8 MB checkpoint write failed with ENOSPC; the last checkpoint (kimg 1) loads whole")


# -- SIGKILL in the middle of a write --------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from worker.storage.local import LocalStorage
    storage = LocalStorage(Path(sys.argv[1]))
    blobs = [bytes([i]) * (8 * 1024 * 1024) for i in (1, 2)]
    print("ready", flush=True)
    i = 0
    while True:
        storage.put_bytes("artifacts/blob.bin", blobs[i % 2])
        i += 1
    """
)


def test_sigkill_while_storing_leaves_the_old_or_the_new_file_whole(tmp_path: Path) -> None:
    root = tmp_path / "data"
    storage = LocalStorage(root)
    storage.put_bytes("artifacts/blob.bin", bytes([1]) * (8 * 1024 * 1024))
    kills = 0
    seen = set()
    for delay in (0.05, 0.11, 0.17, 0.23, 0.29, 0.37, 0.41, 0.53):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
        )
        assert writer.stdout is not None and writer.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        kills += 1
        data = _read(storage, "artifacts/blob.bin")
        assert len(data) == 8 * 1024 * 1024 and data in (bytes([1]) * len(data), bytes([2]) * len(data))
        seen.add(data[0])
    left = _leftovers(root, {"blob.bin"})
    print(f"{kills} SIGKILLs mid-write: the file was whole every time (contents seen: {sorted(seen)}); "
          f"{len(left)} temporary files left by the killed writers")  # fmt: skip
    # A killed writer cannot clean up after itself; what it leaves must not be mistaken for the file.
    assert all(".tmp" in name or "tmp" in name for name in left), left


# -- SQLite under concurrent writers ---------------------------------------------------------------------


def test_sqlite_concurrent_api_and_worker_writes_and_sigkill_keep_the_file_intact(tmp_path: Path) -> None:
    from worker.embedded import EmbeddedBroker

    data_dir = tmp_path / "data"
    logs = tmp_path / "logs"
    logs.mkdir()
    values: dict[str, Any] = {"data_dir": data_dir, **FAST}
    broker = EmbeddedBroker(data_dir)
    broker.start()
    workers = WorkerProcesses(logs)
    try:
        upgrade_head(Settings(**values).effective_database_url)
        env = settings_env(**values)
        victim = workers.spawn(env, queues="training", name="victim")
        workers.spawn(env, queues="training", name="survivor")
        with TestClient(create_app(Settings(**values)), raise_server_exceptions=False) as http:
            started = time.monotonic()

            def submit(_: int) -> int:
                return http.post("/v1/jobs", json=probe(0.05)).status_code

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(submit, range(120)))
            assert codes == [202] * len(codes), sorted(set(codes))
            ids = [job["id"] for job in _all_jobs(http)]
            # Kill one worker while jobs run, and keep reading and writing meanwhile.
            time.sleep(0.5)
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(10)
            extra = [http.post("/v1/jobs", json=probe(0.05)).json()["id"] for _ in range(10)]
            states = [wait_job(http, job_id, finished, timeout=180)["state"] for job_id in ids + extra]
            elapsed = time.monotonic() - started
        locked = workers.logs().count("database is locked")
        database = Path(Settings(**values).effective_database_url.removeprefix("sqlite:///"))
        with contextlib.closing(sqlite3.connect(database)) as db:
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        print(
            f"SQLite: {len(ids) + len(extra)} jobs from 8 API threads over 2 workers (one SIGKILLed mid-run) "
            f"in {elapsed:.1f} s: states {sorted(set(states))}, 'database is locked' {locked} times, "
            f"integrity_check {integrity!r}"
        )
        assert set(states) == {"succeeded"}
        assert locked == 0
        assert integrity == "ok"
    finally:
        workers.stop_all()
        broker.stop()


def _all_jobs(http: TestClient) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    while True:
        page = http.get("/v1/jobs", params={"limit": 100, "offset": len(jobs)}).json()
        jobs += page["items"]
        if len(jobs) >= page["total"] or not page["items"]:
            return jobs
