"""Local storage (atomic, confined to its root) and the readiness checks."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from worker.db.migrate import upgrade_head
from worker.health import check_broker, check_database, check_storage
from worker.settings import Settings
from worker.storage import InvalidKey, LocalStorage, Storage, new_key


def test_round_trip(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    assert isinstance(storage, Storage)
    key = new_key("artifacts", "grid.png")
    storage.put_bytes(key, b"\x89PNG data")
    assert storage.exists(key) and storage.size(key) == 9
    with storage.open(key) as f:
        assert f.read() == b"\x89PNG data"
    storage.put_file(key, io.BytesIO(b"new"))  # replaces
    assert storage.local_path(key).read_bytes() == b"new"  # type: ignore[union-attr]
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    storage.put_file("models/m.pkl", src)
    assert storage.local_path("models/m.pkl").read_bytes() == src.read_bytes()  # type: ignore[union-attr]
    storage.delete(key)
    storage.delete(key)  # idempotent
    assert not storage.exists(key)
    # No temp file is left next to the stored ones.
    assert not [p for p in (tmp_path / "files").rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", ".hidden", "a\\b", "x" * 501]
)
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidKey):
        LocalStorage(tmp_path).put_bytes(key, b"x")


def test_symlink_out_of_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(InvalidKey, match="outside"):
        LocalStorage(root).put_bytes("link/escaped", b"x")
    assert not (tmp_path / "escaped").exists()


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("a/b", b"old")

    class Broken(io.RawIOBase):
        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            raise OSError("disk went away")

        def readable(self) -> bool:
            return True

    with pytest.raises(OSError, match="disk went away"):
        storage.put_file("a/b", Broken())  # type: ignore[arg-type]
    assert storage.local_path("a/b").read_bytes() == b"old"  # type: ignore[union-attr]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


def test_checks_on_embedded_paths(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", broker_url="redis://127.0.0.1:9/0", broker_timeout_seconds=1
    )
    ok, detail = check_database(settings)
    assert not ok and "stylegan migrate" in detail  # reachable but never migrated
    upgrade_head(settings.effective_database_url)
    assert check_database(settings)[0]
    ok, detail = check_broker(settings)
    assert not ok and "unreachable" in detail
    assert check_storage(settings) == (True, "storage writable")


@pytest.mark.integration
def test_checks_on_real_servers(tmp_path: Path, fresh_postgres_url: str, redis_url: str) -> None:
    settings = Settings(data_dir=tmp_path, database_url=fresh_postgres_url, broker_url=redis_url)
    upgrade_head(fresh_postgres_url)
    assert check_database(settings)[0]
    assert check_broker(settings) == (True, "broker answered")
    down = Settings(data_dir=tmp_path, database_url=fresh_postgres_url.rsplit("/", 1)[0] + "/no_such_db")
    ok, detail = check_database(down)
    assert not ok and "unreachable" in detail
