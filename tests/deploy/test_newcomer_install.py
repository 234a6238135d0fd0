"""The newcomer's path, walked as a newcomer walks it: a copy of the tree with no virtual environment,
the README's serve command (`scripts/serve.sh`) run verbatim, which installs the runtime lock only (no
test extra), then every module of gan/, worker/ and api/ imported in that environment, and a demo face
served by the service it started.

It exists because a green suite once hid a dependency only the test extra brought in (kombu's Redis
transport needs `packaging`): the service's workers died at start while every test passed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# Creating the environment and installing torch and the lock from the machine's pip cache takes about
# a minute on 2 cores; a first install that downloads everything takes longer.
INSTALL_AND_READY_TIMEOUT_S = 540.0
TEST_ONLY_PACKAGES = ("pytest", "schemathesis", "mypy", "ruff")

IMPORT_EVERY_MODULE = """
import importlib, pkgutil
names = []
for top in ("gan", "worker", "api"):
    package = importlib.import_module(top)
    names += [top] + [info.name for info in pkgutil.walk_packages(package.__path__, prefix=top + ".")]
failed = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
import kombu.transport.redis  # what the workers' broker connection loads
print(len(names), "modules")
print("\\n".join(failed))
raise SystemExit(1 if failed else 0)
"""


def copy_of_the_tree(dest: Path) -> Path:
    """The files a clone has (tracked, plus new ones git does not ignore): no .venv, no data."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (raw.decode() for raw in listed)):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def newcomer_env() -> dict[str, str]:
    """This process's environment without what a test run adds: no virtual environment on PATH, no
    STYLEGAN_* settings, no PYTHONPATH."""
    venv_bin = str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    dropped = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "STYLEGAN_VENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLEGAN_") and k not in dropped}
    return {**env, "PATH": path, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Path]:
    yield copy_of_the_tree(tmp_path / "clone")


def test_the_readme_serve_command_serves_a_demo_face_from_the_runtime_lock_alone(clone: Path) -> None:
    assert not (clone / ".venv").exists()
    port = free_port()
    log = clone.parent / "serve.log"
    started = time.monotonic()
    with log.open("wb") as out:
        serve = subprocess.Popen(
            ["scripts/serve.sh", "--port", str(port)],
            cwd=clone,
            env=newcomer_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:

        def ready() -> bool:
            assert serve.poll() is None, (
                f"serve.sh exited with {serve.returncode}:\n{log.read_text()[-6000:]}"
            )
            try:
                return http.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, INSTALL_AND_READY_TIMEOUT_S, "scripts/serve.sh to install and answer /readyz", 0.5)
        print(f"scripts/serve.sh: installed and ready in {time.monotonic() - started:.0f} s")

        python = clone / ".venv" / "bin" / "python"
        installed = subprocess.run(
            [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
        ).stdout.lower()
        names = {line.split("==")[0] for line in installed.splitlines()}
        assert not names & set(TEST_ONLY_PACKAGES), "the runtime install must not bring the test tools"

        imported = subprocess.run(
            [str(python), "-c", IMPORT_EVERY_MODULE], cwd=clone, capture_output=True, text=True, timeout=300
        )
        assert imported.returncode == 0, f"modules that fail to import:\n{imported.stdout}{imported.stderr}"
        print(imported.stdout.splitlines()[0], "import in the runtime environment")

        workers = http.get("/v1/workers").json()["items"]
        assert sorted(q for w in workers for q in w["queues"]) == ["inference", "training"]
        (demo,) = [m for m in http.get("/v1/models").json()["items"] if m["demo"]]
        face = http.get(f"/v1/models/{demo['id']}/images/42.png")
        assert face.status_code == 200, face.text
        assert face.headers["content-type"] == "image/png" and face.content.startswith(b"\x89PNG")
    finally:
        http.close()
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGTERM)
        try:
            code = serve.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            code = serve.wait()
        print(log.read_text(errors="replace")[-3000:])
    assert code == 0, "Ctrl-C or SIGTERM stops the service cleanly"
