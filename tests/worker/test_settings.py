"""Settings read from STYLEGAN_* variables and refuse bad values early."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.settings import Settings


def test_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    settings = Settings()
    assert settings.broker_url is None and settings.database_url is None and not settings.auth_enabled
    assert (
        settings.effective_database_url == f"sqlite:///{(tmp_path / 'data' / 'stylegan.sqlite3').as_posix()}"
    )


def test_env_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STYLEGAN_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("STYLEGAN_DATABASE_URL", "postgresql+psycopg://u:p@h/db")
    monkeypatch.setenv("STYLEGAN_BROKER_URL", "redis://localhost:6379/0")
    monkeypatch.setenv("STYLEGAN_API_KEYS", "aaaaaaaaaaaaaaaa1, bbbbbbbbbbbbbbbb2")
    monkeypatch.setenv("STYLEGAN_MAX_BATCH", "8")
    settings = Settings()
    assert settings.data_dir == tmp_path / "d"
    assert settings.effective_database_url == "postgresql+psycopg://u:p@h/db"
    assert settings.api_keys == ("aaaaaaaaaaaaaaaa1", "bbbbbbbbbbbbbbbb2") and settings.auth_enabled
    assert settings.max_batch == 8


def test_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("STYLEGAN_MAX_RESOLUTION=256\n")
    assert Settings().max_resolution == 256


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("database_url", "postgresql://u@h/db"),  # psycopg 2 URL: refused, not rewritten
        ("database_url", "mysql://x"),
        ("broker_url", "http://x"),
        ("api_keys", "short"),
        ("max_batch", 0),
        ("max_upload_bytes", -1),
        ("job_max_attempts", 0),
        ("heartbeat_seconds", float("nan")),
    ],
)
def test_bad_values_are_refused(
    field: str, value: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


def test_lease_must_cover_two_heartbeats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="at least twice"):
        Settings(job_lease_seconds=5, heartbeat_seconds=3)
