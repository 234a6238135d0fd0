"""Scale-out proven on one machine: three hosts built from network namespaces, as the README's "Running
on several machines" describes them.

Host A runs PostgreSQL, Redis, an S3-compatible server (moto's) and the API (`stylegan serve
--no-worker`), each listening on A's own address. Hosts B and C run `stylegan worker` only (one
inference and one training worker each), configured by nothing but STYLEGAN_* and AWS_* variables that
name A's addresses, each with its own data directory: nothing is shared on disk, every file goes through
the object store. The test itself is a client on the same LAN and speaks HTTP to A.

Shown: sampling requests are served by workers on both B and C; a fine-tune runs on B, B is SIGKILLed
(its whole host: both worker process groups) after checkpoints were stored, and C takes the job over
once B's lease runs out, resuming from the last checkpoint, which C can only have read from the object
store. Leases are short (as tests/hardening/stacks.py's FAST) so that the failover takes seconds.

The network: a bridge in a namespace of its own (a switch, so the machine's own firewall rules never
see the traffic between hosts), one veth pair per host, and one more to this process's namespace. All
names carry a per-run tag and are removed in a `finally`. When the namespaces cannot be made the test
fails with the reason; it never skips.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.test_datasets import png
from tests.api.test_events import parse_sse
from tests.api.test_training_validation import fixture_pickle
from tests.servers import (
    ApiProcess,
    PostgresServer,
    RedisServer,
    S3Server,
    ServerStartError,
    WorkerProcesses,
    settings_env,
    wait_for,
    wait_for_worker,
)
from worker.settings import Settings

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
# Short leases: a lost worker's job is re-queued about 2 s after its last heartbeat.
FAST: dict[str, Any] = {
    "job_lease_seconds": 2.0,
    "heartbeat_seconds": 0.2,
    "reconcile_seconds": 0.5,
    "broker_timeout_seconds": 1.0,
}
# The tiny fine-tune of tests/api/test_training_integration.py (32 px fixture, D at cbase 1024): ticks
# of 0.012 kimg, a checkpoint every second tick, long enough that B is killed well before the end.
TRAINING = {"batch": 4, "tick": 0.01, "cbase": 1024, "cmax": 64, "preview_images": 4, "snap": 2, "kimg": 0.2}
SAMPLES = 24
# Celery's line for each finished sampling request (worker/inference/tasks.py keeps it, minus the image).
RENDERED = re.compile(r"Task stylegan\.render\[[0-9a-f-]+\] succeeded")


def ip(command: str) -> None:
    """One `ip` command (its words split on spaces); a failure names it and what `ip` said."""
    done = subprocess.run(["ip", *command.split()], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise OSError(f"`ip {command}` failed ({done.returncode}): {done.stderr.strip()}")


class Lan:
    """Hosts a, b, c (network namespaces) and this process on one /24 behind a bridge of its own."""

    HOSTS = {"a": 10, "b": 11, "c": 12}
    CLIENT = 1

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.switch = f"sg-{self.tag}-lan"
        self.client_link = f"sg{self.tag}"  # in this namespace: must be unique here, and 15 chars at most
        self.made: list[str] = []
        used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
        used += subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
        free = [n for n in range(1, 255) if f"10.213.{n}." not in used]
        assert free, "every 10.213.N.0/24 is in use on this machine"
        self.net = f"10.213.{random.choice(free)}"

    @property
    def cidr(self) -> str:
        return f"{self.net}.0/24"

    def namespace(self, host: str) -> str:
        return f"sg-{self.tag}-{host}"

    def address(self, host: str) -> str:
        return f"{self.net}.{self.HOSTS[host]}"

    def exec(self, host: str) -> list[str]:
        """The command prefix that runs a program on `host`."""
        return ["ip", "netns", "exec", self.namespace(host)]

    def up(self) -> None:
        switch, client = self.switch, self.client_link
        for name in (switch, *(self.namespace(h) for h in self.HOSTS)):
            ip(f"netns add {name}")
            self.made.append(name)
            ip(f"-n {name} link set lo up")
        ip(f"-n {switch} link add name br0 type bridge forward_delay 0")
        ip(f"-n {switch} link set br0 up")
        for host, last in self.HOSTS.items():
            ns = self.namespace(host)
            ip(f"-n {switch} link add name to-{host} type veth peer name eth0 netns {ns}")
            ip(f"-n {switch} link set to-{host} master br0 up")
            ip(f"-n {ns} addr add {self.net}.{last}/24 dev eth0")
            ip(f"-n {ns} link set eth0 up")
        ip(f"link add name {client} type veth peer name to-client netns {switch}")
        ip(f"-n {switch} link set to-client master br0 up")
        ip(f"addr add {self.net}.{self.CLIENT}/24 dev {client}")
        ip(f"link set {client} up")

    def down(self) -> None:
        # Deleting a namespace deletes its veth ends and so their peers, this process's end included.
        for name in reversed(self.made):
            with contextlib.suppress(OSError):
                ip(f"netns del {name}")
        with contextlib.suppress(OSError):
            ip(f"link del {self.client_link}")


def dataset_zip(count: int = 24) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(count):
            zf.writestr(f"faces/{i:03d}.png", png((40, 40), seed=i))
    return buf.getvalue()


def until(check: Callable[[], Any], timeout: float, what: str, alive: Callable[[], None]) -> Any:
    def polled() -> Any:
        alive()
        return check()

    return wait_for(polled, timeout, what, interval=0.1)


def job_row(database_url: str, job_id: str) -> dict[str, Any]:
    """The job's row as the database holds it (the worker_id of the current claim is not on the API)."""
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT state, attempts, worker_id FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return {"state": row[0], "attempts": row[1], "worker_id": row[2] or ""}


def read_events(http: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        text = "".join(response.iter_text())
    return parse_sse(text)[0]


@contextlib.contextmanager
def lan_up() -> Iterator[Lan]:
    lan = Lan()
    try:
        try:
            lan.up()
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.fail(f"cannot build the network namespaces for hosts A, B and C: {exc}", pytrace=False)
        yield lan
    finally:
        lan.down()


def test_workers_on_two_hosts_share_the_work_and_take_over_a_killed_hosts_training(tmp_path: Path) -> None:
    started = time.monotonic()
    logs = tmp_path / "logs"
    logs.mkdir()
    workers = WorkerProcesses(logs)
    with contextlib.ExitStack() as cleanup:
        lan = cleanup.enter_context(lan_up())
        a = lan.address("a")
        on_a = lan.exec("a")
        # Host A: the database, the broker, the object store and the API, each on A's address.
        try:
            postgres = PostgresServer(host=a, wrap=on_a, trusted_subnet=lan.cidr)
            cleanup.callback(postgres.stop)
            postgres.start()
            redis = RedisServer(host=a, wrap=on_a)
            cleanup.callback(redis.stop)
            redis.start()
            s3 = S3Server(host=a, wrap=on_a)
            cleanup.callback(s3.stop)
            s3.start()
        except (ServerStartError, OSError, TimeoutError) as exc:
            pytest.fail(f"could not start a server on host A ({a}): {exc}", pytrace=False)
        bucket = s3.create_bucket()
        database_url = postgres.create_database()
        shared = {
            "database_url": database_url,
            "broker_url": redis.url,
            "storage_url": f"s3://{bucket}/stylegan",
            **FAST,
        }
        api_env = {
            **settings_env(
                **shared,
                data_dir=tmp_path / "host-a",
                limits_redis_url=redis.url.removesuffix("/0") + "/1",
            ),
            **s3.env,
        }
        api = ApiProcess(
            api_env, logs, host=a, program=[*on_a, str(BIN / "stylegan"), "serve", "--no-worker"]
        )
        cleanup.callback(api.stop)
        api.wait_ready(120)
        cleanup.callback(lambda: print(api.log_path.read_text(errors="replace")[-3000:]))

        # Hosts B and C: `stylegan worker` only, each with its own data directory.
        def worker_env(host: str) -> dict[str, str]:
            values = {**shared, "data_dir": tmp_path / f"host-{host}", "inference_concurrency": 4}
            return {**settings_env(**values), **s3.env}

        def start_worker(host: str, queues: str) -> subprocess.Popen[bytes]:
            return workers.spawn(
                worker_env(host),
                queues=queues,
                name=f"{host}-{queues}",
                wait=False,
                program=[*lan.exec(host), str(BIN / "stylegan"), "worker"],
                node=f"{queues}@host-{host}",
            )

        cleanup.callback(lambda: print(workers.logs()[-8000:]))
        cleanup.callback(workers.stop_all)
        observer = Settings(database_url=database_url, **FAST)

        def ready(*processes: subprocess.Popen[bytes]) -> None:
            for process in processes:
                wait_for_worker(observer, process.node, process, timeout=120)  # type: ignore[attr-defined]

        b_inference, b_training = start_worker("b", "inference"), start_worker("b", "training")
        c_inference = start_worker("c", "inference")
        ready(b_inference, b_training, c_inference)
        setup_s = time.monotonic() - started

        def alive() -> None:
            for process in workers.processes:
                if process.poll() is not None and process not in killed:
                    pytest.fail(f"{process.node} exited with {process.returncode}:\n{workers.logs()}")  # type: ignore[attr-defined]
            if api.process.poll() is not None:
                pytest.fail(f"the API exited:\n{api.log_path.read_text(errors='replace')[-4000:]}")

        killed: list[subprocess.Popen[bytes]] = []
        http = cleanup.enter_context(httpx.Client(base_url=api.url, timeout=60.0))

        # A model and a dataset over HTTP: both land in the object store on A.
        upload = http.post(
            "/v1/models", files={"file": ("network.pkl", fixture_pickle("sg2ada_uncond_32").read_bytes())}
        )
        assert upload.status_code == 201, upload.text
        model_id = upload.json()["id"]
        dataset = http.post("/v1/datasets", files={"file": ("faces.zip", dataset_zip())})
        assert dataset.status_code == 201, dataset.text
        assert dataset.json()["image_count"] == 24 and dataset.json()["resolution"] == 32
        assert not (tmp_path / "host-a" / "files").exists(), "a file was stored on A's disk, not in S3"

        # Sampling: requests four at a time; each worker renders what its inference worker takes.
        def sample(seed: int) -> int:
            return http.get(f"/v1/models/{model_id}/images/{seed}.png").status_code

        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(sample, range(SAMPLES)))
        assert codes == [200] * SAMPLES, codes

        def served(process: subprocess.Popen[bytes]) -> int:
            return len(RENDERED.findall(process.log_path.read_text(errors="replace")))  # type: ignore[attr-defined]

        # Celery writes the success line just after the result is stored: wait for the last ones.
        until(lambda: served(b_inference) + served(c_inference) == SAMPLES, 10, "all renders logged", alive)
        per_host = {"b": served(b_inference), "c": served(c_inference)}
        assert per_host["b"] > 0 and per_host["c"] > 0, per_host
        listed = {w["name"] for w in http.get("/v1/workers").json()["items"]}
        assert {"inference@host-b", "training@host-b", "inference@host-c"} <= listed, listed

        # A fine-tune, claimed by B's training worker (the only one consuming training so far).
        body = {"dataset_id": dataset.json()["id"], "base_model_id": model_id, **TRAINING}
        response = http.post("/v1/training-jobs", json=body)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        on_b = until(lambda: job_row(database_url, job_id)["worker_id"], 60, "B to claim the job", alive)
        assert on_b.startswith("training@host-b/"), on_b
        # C's training worker joins (scaling out while B trains), then B's host dies mid-run, once
        # checkpoints beyond tick 0 are stored.
        c_training = start_worker("c", "training")
        ready(c_training)

        def mid_run() -> bool:
            """Two checkpoints stored, and B a tick past the last one (work that will be redone)."""
            view = http.get(f"/v1/training-jobs/{job_id}").json()
            assert view["state"] == "running", view
            kimg = [c["kimg"] for c in view["checkpoints"]]
            at = (view["progress_detail"] or {}).get("kimg") or 0.0
            return len(kimg) >= 2 and at > max(kimg) and view["progress"] < 0.7

        until(mid_run, 90, "two checkpoints on B and a tick past them", alive)
        for process in (b_inference, b_training):
            killed.append(process)
            workers.kill(process)
        killed_at = time.monotonic()

        def taken_over() -> bool:
            row = job_row(database_url, job_id)
            return row["state"] == "running" and str(row["worker_id"]).startswith("training@host-c/")

        until(taken_over, 60, "C to claim the job", alive)
        failover_s = time.monotonic() - killed_at
        # B is gone: sampling goes on, on C alone.
        with ThreadPoolExecutor(4) as pool:
            after = list(pool.map(sample, range(SAMPLES, SAMPLES + 8)))
        assert after == [200] * 8, after
        until(lambda: served(c_inference) == per_host["c"] + 8, 10, "C to log the 8 renders", alive)

        job = until(
            lambda: (
                (j := http.get(f"/v1/jobs/{job_id}").json())["state"] in {"succeeded", "failed", "canceled"}
                and j
            ),
            120,
            "the job to finish on C",
            alive,
        )
        assert job["state"] == "succeeded", job
        assert job["attempts"] == 2, job
        finished_row = job_row(database_url, job_id)
        assert finished_row["worker_id"].startswith("training@host-c/") and finished_row["worker_id"] != on_b

        events = read_events(http, job_id)
        states = [e["data"]["state"] for e in events if e["event"] == "state"]
        assert states == ["running", "queued", "running", "succeeded"], states
        requeued = next(e["id"] for e in events if e["event"] == "state" and e["data"]["state"] == "queued")
        first_checkpoints = [
            e["data"]["kimg"] for e in events if e["event"] == "checkpoint" and e["id"] < requeued
        ]
        first_ticks = [
            e["data"]["kimg"]
            for e in events
            if e["event"] == "progress" and e["id"] < requeued and e["data"]["tick"] is not None
        ]
        second = [e["data"] for e in events if e["event"] == "progress" and e["data"]["attempt"] == 2]
        resume_kimg = max(first_checkpoints)
        assert resume_kimg > 0 and len(first_checkpoints) >= 2, first_checkpoints
        # C started where B's last stored checkpoint left off, not from the base model.
        assert second[0]["resumed_from_kimg"] == resume_kimg and second[0]["kimg"] == resume_kimg, second[0]
        assert all(p["kimg"] > resume_kimg for p in second[1:])
        assert job["result"]["kimg"] >= TRAINING["kimg"]
        c_log = c_training.log_path.read_text(errors="replace")  # type: ignore[attr-defined]
        assert f"attempt 2 resumes from checkpoint at {resume_kimg:.3f} kimg" in c_log, c_log[-3000:]
        # Nothing of the job is on B's or A's disk to resume from: C read the checkpoint from S3.
        assert not (tmp_path / "host-c" / "files").exists() and not (tmp_path / "host-a" / "files").exists()
        keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert any(k.startswith(f"stylegan/jobs/{job_id}/checkpoints/") for k in keys), keys

        print(
            json.dumps(
                {
                    "subnet": lan.cidr,
                    "setup_s": round(setup_s, 1),
                    "sampling_requests_served": per_host,
                    "sampling_after_b_died_served_by_c": len(after),
                    "failover_s": round(failover_s, 2),
                    "resumed_from_kimg": resume_kimg,
                    "b_reached_kimg": max(first_ticks),
                    "kimg_redone": round(max(first_ticks) - resume_kimg, 3),
                    "final_kimg": job["result"]["kimg"],
                    "total_s": round(time.monotonic() - started, 1),
                }
            )
        )
