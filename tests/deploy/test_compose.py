"""docker-compose.yml and the Dockerfiles, checked without a Docker engine.

`docker-compose config` (Debian's docker-compose 1.29, which understands GPU reservations) parses,
interpolates and validates the file against the compose schema; the assertions then check what the
deployment relies on. The images themselves are not built here (no engine).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILES = sorted(p for p in (ROOT / "docker").glob("Dockerfile.*") if p.suffix != ".dockerignore")


def _compose_config(env: dict[str, str] | None = None) -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed; scripts/test.sh installs it with apt-get")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )
    assert result.returncode == 0, f"docker-compose config refused the file:\n{result.stderr}"
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


WORKERS = ("inference", "worker")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return _compose_config()


def test_services_and_named_volumes(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {
        "api",
        "inference",
        "worker",
        "redis",
        "postgres",
        "minio",
        "minio-bucket",
    }
    declared = set(config["volumes"])
    for name, service in config["services"].items():
        for mount in service.get("volumes", []):
            source = mount["source"] if isinstance(mount, dict) else mount.split(":")[0]
            assert source in declared, f"{name} mounts {source!r}, which is not a named volume"
    assert {"stylegan-data", "redis-data", "postgres-data", "minio-data"} <= declared


# Services that run once and exit (the bucket creation): what depends on them waits for their success.
ONE_SHOT = ("minio-bucket",)


def test_every_service_has_a_healthcheck_and_dependencies_wait_for_it(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in ("api", "redis", "postgres", "minio"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if dependency in ONE_SHOT:
                assert condition["condition"] == "service_completed_successfully", (
                    f"{name} starts before {dependency} has finished"
                )
                assert services[dependency]["restart"] == "no"
                continue
            assert condition["condition"] == "service_healthy", (
                f"{name} starts before {dependency} is healthy"
            )
            assert "healthcheck" in services[dependency]


@pytest.mark.parametrize("name", WORKERS)
def test_workers_reserve_an_nvidia_gpu(config: dict[str, Any], name: str) -> None:
    devices = config["services"][name]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_sampling_and_training_have_their_own_workers(config: dict[str, Any]) -> None:
    """Training never blocks sampling: each queue has its own worker service."""
    queues = {}
    for name in WORKERS:
        command = config["services"][name]["command"]
        queues[name] = command[command.index("--queues") + 1]
    assert queues == {"inference": "inference", "worker": "training"}


def test_redis_persists_and_postgres_is_15(config: dict[str, Any]) -> None:
    redis = config["services"]["redis"]
    command = redis["command"] if isinstance(redis["command"], list) else redis["command"].split()
    assert command[command.index("--appendonly") + 1] == "yes"
    assert config["services"]["postgres"]["image"].split(":")[1].startswith("15")


def test_api_and_worker_settings_are_valid_and_identical(config: dict[str, Any]) -> None:
    env = {name: config["services"][name]["environment"] for name in ("api", *WORKERS)}
    for name in WORKERS:
        assert env["api"] == env[name], f"api and {name} must see the same database, broker and storage"
    settings = Settings(
        database_url=env["api"]["STYLEGAN_DATABASE_URL"],
        broker_url=env["api"]["STYLEGAN_BROKER_URL"],
        data_dir=env["api"]["STYLEGAN_DATA_DIR"],
    )
    assert settings.database_url is not None and settings.database_url.startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in settings.database_url
    assert settings.broker_url == "redis://redis:6379/0"


def test_files_go_to_the_minio_bucket_and_limits_to_redis(config: dict[str, Any]) -> None:
    """Every STYLEGAN service stores in the bucket that minio-bucket creates, with MinIO's credentials,
    and counts its limits in the redis service, so no service needs another's disk or memory."""
    services = config["services"]
    env = services["api"]["environment"]
    settings = Settings(
        storage_url=env["STYLEGAN_STORAGE_URL"], limits_redis_url=env["STYLEGAN_LIMITS_REDIS_URL"]
    )
    bucket, _prefix = settings.storage_bucket_and_prefix
    assert f"mb --ignore-existing store/{bucket}" in " ".join(services["minio-bucket"]["command"])
    assert services["minio-bucket"]["image"] == services["minio"]["image"]
    assert services["minio"]["image"].startswith("minio/minio:RELEASE.")
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    minio = services["minio"]["environment"]
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )
    assert env["AWS_REGION"]
    # Its own database number: limits' keys never mix with the broker's queues.
    assert settings.limits_redis_url == "redis://redis:6379/1" != env["STYLEGAN_BROKER_URL"]
    assert "minio-bucket" in services["api"]["depends_on"]


def test_passwords_and_keys_come_from_the_environment() -> None:
    config = _compose_config(
        {"POSTGRES_PASSWORD": "s3cret-pw", "STYLEGAN_API_KEYS": "k" * 20, "MINIO_ROOT_PASSWORD": "m" * 12}
    )
    api_env = config["services"]["api"]["environment"]
    assert ":s3cret-pw@postgres" in api_env["STYLEGAN_DATABASE_URL"]
    assert config["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret-pw"
    assert api_env["STYLEGAN_API_KEYS"] == "k" * 20
    assert api_env["AWS_SECRET_ACCESS_KEY"] == "m" * 12
    for name in ("minio", "minio-bucket"):
        assert config["services"][name]["environment"]["MINIO_ROOT_PASSWORD"] == "m" * 12


def test_worker_image_is_a_cuda_pytorch_base() -> None:
    text = (ROOT / "docker" / "Dockerfile.worker").read_text()
    base = re.search(r"^ARG PYTORCH_IMAGE=(\S+)", text, re.M)
    assert base is not None and base.group(1).startswith("pytorch/pytorch:")
    assert "cuda" in base.group(1) and "runtime" in base.group(1)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_only_what_exists(dockerfile: Path) -> None:
    """A COPY of a missing path fails the build; with no engine here, check the sources instead."""
    copies = re.findall(r"^COPY\s+(?!--from)(.+)$", dockerfile.read_text(), re.M)
    assert copies, f"{dockerfile.name} copies nothing"
    for line in copies:
        *sources, _dest = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} names a missing path"


def test_compose_builds_the_dockerfiles_in_docker(config: dict[str, Any]) -> None:
    for name in ("api", *WORKERS):
        build = config["services"][name]["build"]
        assert (Path(build["context"]) / build["dockerfile"]).is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_install_from_the_runtime_lock(dockerfile: Path) -> None:
    """The images get the versions the tests ran with: the hash-checked lock, the project without
    resolving anything more, and a consistency check."""
    text = dockerfile.read_text()
    assert "pip install --require-hashes -r requirements-runtime.lock" in text
    assert "pip install --no-deps -e ." in text and "pip check" in text


def test_api_healthcheck_does_not_wait_for_the_workers_that_wait_for_it(config: dict[str, Any]) -> None:
    """Workers start once the api is healthy; /readyz needs live workers, so the api's check must not
    be /readyz or neither side would ever start."""
    assert "/healthz" in " ".join(config["services"]["api"]["healthcheck"]["test"])
    assert {"api"} <= set(config["services"]["inference"]["depends_on"])
