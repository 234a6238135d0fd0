"""`stylegan serve|worker|migrate` argument and settings errors: exit code 2, one line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.db.migrate import current_revision, head_revision
from worker.settings import Settings

STYLEGAN = Path(sys.executable).with_name("stylegan")


def run_stylegan(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STYLEGAN_")}
    return subprocess.run(
        [str(STYLEGAN), *args], capture_output=True, text=True, cwd=cwd, env={**clean, **env}, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["serve", "--port", "eighty"], "not a port number: 'eighty'"),
        (["serve", "--port", "70000"], "port must be in 1..65535"),
        (["serve", "--bogus"], "unrecognized arguments: --bogus"),
        (["worker", "--queues", "gpu"], "unknown queue 'gpu'"),
        (["worker", "--queues", "inference,bogus"], "unknown queue 'bogus'"),
        (["worker", "--concurrency", "0"], "must be at least 1"),
        (["teleport"], "invalid choice: 'teleport'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = run_stylegan(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    result = run_stylegan("serve", "--data-dir", str(tmp_path / "afile"), cwd=tmp_path)
    assert result.returncode == 2 and "is not a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_setting_is_one_line(tmp_path: Path) -> None:
    result = run_stylegan("migrate", cwd=tmp_path, STYLEGAN_DATABASE_URL="mysql://db/x")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "STYLEGAN_DATABASE_URL" in result.stderr and "Traceback" not in result.stderr


def test_worker_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    result = run_stylegan("worker", cwd=tmp_path, STYLEGAN_DATA_DIR=str(tmp_path / "data"))
    assert result.returncode == 2
    assert "stylegan migrate" in result.stderr and "Traceback" not in result.stderr


def test_migrate_builds_the_schema(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_stylegan("migrate", cwd=tmp_path, STYLEGAN_DATA_DIR=str(data))
    assert result.returncode == 0, result.stderr
    url = Settings(data_dir=data).effective_database_url
    assert current_revision(url) == head_revision()
    # A second run is a no-op, not an error.
    assert run_stylegan("migrate", cwd=tmp_path, STYLEGAN_DATA_DIR=str(data)).returncode == 0
