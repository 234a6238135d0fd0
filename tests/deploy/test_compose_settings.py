"""The new user's journey (tests/api/test_user_journey.py) through docker-compose.yml's settings, without
a Docker engine: the `api`, `inference` and `worker` services' commands and STYLEGAN_* environment are read from the
compose file itself and run as local processes against the test session's throwaway PostgreSQL, Redis
and S3 server (moto's, standing in for the `postgres`, `redis` and `minio` services). Only what a
container would change is replaced: the hosts in the URLs, the bucket and MinIO's credentials, the data
volume (a temporary directory) and the published port.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.api.test_user_journey import wait_ready, walk_journey
from tests.servers import PostgresServer, RedisServer, S3Server, free_port

pytestmark = pytest.mark.integration

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
BIN = Path(sys.executable).parent


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return services


def local_env(
    service: dict[str, Any],
    *,
    database_url: str,
    broker_url: str,
    data_dir: Path,
    s3: S3Server,
    bucket: str,
) -> dict[str, str]:
    """The service's STYLEGAN_* environment with the container-only values replaced. Every compose
    variable must be one we know how to replace, so a new one is noticed here."""
    env: dict[str, str] = {}
    for name, value in service["environment"].items():
        if name == "STYLEGAN_DATABASE_URL":
            assert str(value).startswith("postgresql+psycopg://") and "@postgres:5432/" in value, value
            env[name] = database_url
        elif name == "STYLEGAN_BROKER_URL":
            assert str(value).startswith("redis://redis:6379/"), value
            env[name] = broker_url
        elif name == "STYLEGAN_LIMITS_REDIS_URL":
            assert str(value).startswith("redis://redis:6379/"), value
            env[name] = broker_url.rsplit("/", 1)[0] + "/" + str(value).rsplit("/", 1)[1]
        elif name == "STYLEGAN_STORAGE_URL":
            assert str(value).startswith("s3://"), value
            env[name] = f"s3://{bucket}/{str(value).removeprefix('s3://').partition('/')[2]}"
        elif name == "AWS_ENDPOINT_URL":
            assert value == "http://minio:9000", value
            env[name] = s3.env[name]
        elif name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            env[name] = s3.env[name]  # moto takes any credentials; the compose file's are MinIO's
        elif name == "STYLEGAN_DATA_DIR":
            env[name] = str(data_dir)
        elif name == "STYLEGAN_API_KEYS":
            assert re.fullmatch(r"\$\{STYLEGAN_API_KEYS:-\}", str(value)), value  # empty by default: auth off
            env[name] = ""
        else:
            pytest.fail(f"docker-compose.yml sets {name}={value!r}; teach this test how to run it locally")
    return env


def local_command(command: list[str], port: int) -> list[str]:
    """`stylegan ...` from this virtualenv; the API binds to loopback on a free port instead of 0.0.0.0:8000."""
    assert command[0] == "stylegan", command
    args = [str(BIN / "stylegan"), *command[1:]]
    if "--host" in args:
        args[args.index("--host") + 1] = "127.0.0.1"
    if "--port" in args:
        args[args.index("--port") + 1] = str(port)
    return args


class Processes:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STYLEGAN_")}
        with (self.log_dir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                args,
                env={**clean, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env},
                cwd=self.log_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append((name, process))
        return process

    def alive(self) -> None:
        for name, process in self.running:
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{(self.log_dir / f'{name}.log').read_text(errors='replace')[-4000:]}"
            for name, _ in self.running
        )

    def stop_all(self) -> dict[str, int]:
        """SIGTERM (compose's stop_signal), then each exit code; SIGKILL past the grace."""
        for _, process in self.running:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        codes = {}
        for name, process in self.running:
            try:
                codes[name] = process.wait(45)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                codes[name] = process.wait()
        return codes


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    running = Processes(log_dir)
    try:
        yield running
    finally:
        running.stop_all()
        print(running.logs())


def wait_healthy(http: httpx.Client, service: dict[str, Any], alive: Any, timeout: float = 90.0) -> None:
    """Until the URL that the service's compose healthcheck fetches answers 200."""
    (path,) = re.findall(r"http://127\.0\.0\.1:8000(/[a-z]+)", " ".join(service["healthcheck"]["test"]))
    deadline = time.monotonic() + timeout
    while True:
        alive()
        with contextlib.suppress(httpx.TransportError):
            if http.get(path).status_code == 200:
                return
        assert time.monotonic() < deadline, f"{path} did not answer 200"
        time.sleep(0.2)


def test_compose_services_walk_the_journey_on_postgres_and_redis(
    tmp_path: Path,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    s3_server: S3Server,
    processes: Processes,
) -> None:
    services = compose_services()
    redis_server.flush()
    database_url = postgres_server.create_database()  # empty: the api service migrates it
    bucket = s3_server.create_bucket()  # what the minio-bucket service creates
    data_dir = tmp_path / "data"  # the stylegan-data volume: caches and scratch only

    def env(service: dict[str, Any]) -> dict[str, str]:
        return local_env(
            service,
            database_url=database_url,
            broker_url=redis_server.url,
            data_dir=data_dir,
            s3=s3_server,
            bucket=bucket,
        )

    port = free_port()
    # compose: the worker starts once the api is healthy (it ran the migrations and registered the demo).
    processes.start("api", local_command(services["api"]["command"], port), env(services["api"]))
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0)
    try:
        wait_healthy(http, services["api"], processes.alive)
        for name in ("inference", "worker"):
            processes.start(name, local_command(services[name]["command"], port), env(services[name]))
        # Ready once each queue has a live worker.
        wait_ready(http, processes.alive)
        walk_journey(http)
    finally:
        http.close()
    codes = processes.stop_all()
    assert codes == {"api": 0, "inference": 0, "worker": 0}, processes.logs()
    # Every file the journey made went to the bucket; the data volume holds no stored file.
    stored = s3_server.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0)
    assert stored > 0 and not (data_dir / "files").exists()
    print(f"objects stored in the bucket: {stored}")
