"""Storage (atomic, confined to its root, streamed, checked), for the local directory and for an
S3-compatible store alike (moto's server, started by the tests), and the readiness checks."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.servers import S3Server
from worker.db.migrate import upgrade_head
from worker.health import check_broker, check_database, check_storage
from worker.settings import Settings
from worker.storage import (
    InvalidKey,
    LocalStorage,
    S3Storage,
    Storage,
    StoredFileCorrupt,
    make_storage,
    new_key,
)
from worker.storage.s3 import MULTIPART_THRESHOLD

StorageFactory = Callable[[Path], Storage]


@pytest.fixture(params=["local", "s3"])
def make(request: pytest.FixtureRequest) -> StorageFactory:
    """A factory for an empty store of each kind: a directory, or a fresh bucket on moto's server."""
    if request.param == "local":
        return lambda root: LocalStorage(root / "files")
    request.getfixturevalue("s3_env")
    server: S3Server = request.getfixturevalue("s3_server")
    return lambda root: S3Storage(server.create_bucket(), "svc/a", root / "cache")


def test_round_trip(tmp_path: Path, make: StorageFactory) -> None:
    storage = make(tmp_path)
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
    with pytest.raises(FileNotFoundError):
        storage.open(key)
    # No temp file is left next to the stored ones (or in the cache).
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", ".hidden", "a\\b", "x" * 501]
)
def test_unsafe_keys_are_refused(tmp_path: Path, make: StorageFactory, key: str) -> None:
    storage = make(tmp_path)
    for call in (
        lambda: storage.put_bytes(key, b"x"),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
    ):
        with pytest.raises(InvalidKey):
            call()


def test_symlink_out_of_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(InvalidKey, match="outside"):
        LocalStorage(root).put_bytes("link/escaped", b"x")
    assert not (tmp_path / "escaped").exists()


def test_failed_write_keeps_the_old_file(tmp_path: Path, make: StorageFactory) -> None:
    storage = make(tmp_path)
    storage.put_bytes("a/b", b"old")

    class Broken(io.RawIOBase):
        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            raise OSError("disk went away")

        def readable(self) -> bool:
            return True

    with pytest.raises(OSError, match="disk went away"):
        storage.put_file("a/b", Broken())  # type: ignore[arg-type]
    assert storage.local_path("a/b").read_bytes() == b"old"  # type: ignore[union-attr]
    if isinstance(storage, LocalStorage):
        assert sorted(p.name for p in (storage.root / "a").iterdir()) == ["b"]


def test_ranges_and_large_files_stream(tmp_path: Path, make: StorageFactory) -> None:
    """A file over the multipart threshold goes up in parts and comes back whole; a reader seeks to any
    offset and reads only from there (how the artifacts route answers Range, and how a zip is read)."""
    storage = make(tmp_path)
    src = tmp_path / "big.bin"
    data = os.urandom(MULTIPART_THRESHOLD + 3 * 1024 * 1024 + 17)
    src.write_bytes(data)
    storage.put_file("models/big.bin", src)
    assert storage.size("models/big.bin") == len(data)
    with storage.open("models/big.bin") as f:
        f.seek(len(data) - 100)
        assert f.read() == data[-100:]
        f.seek(MULTIPART_THRESHOLD - 5)
        assert f.read(10) == data[MULTIPART_THRESHOLD - 5 : MULTIPART_THRESHOLD + 5]
        f.seek(0)
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    local = storage.local_path("models/big.bin")
    assert local is not None and local.read_bytes() == data
    # From a stream as well (an upload): the same bytes under the key.
    storage.put_file("uploads/x.bin", io.BytesIO(data[:1000]))
    with storage.open("uploads/x.bin") as f:
        assert f.read() == data[:1000]


def test_replaced_object_is_fetched_again(tmp_path: Path, make: StorageFactory) -> None:
    storage = make(tmp_path)
    storage.put_bytes("ckpt/latest", b"one")
    assert storage.local_path("ckpt/latest").read_bytes() == b"one"  # type: ignore[union-attr]
    storage.put_bytes("ckpt/latest", b"two!")
    assert storage.local_path("ckpt/latest").read_bytes() == b"two!"  # type: ignore[union-attr]


def test_s3_checksum_is_checked(tmp_path: Path, s3_server: S3Server, s3_env: dict[str, str]) -> None:
    """An object whose bytes no longer match the sha256 recorded at upload (written behind our back,
    e.g. by another tool) is refused, on a full read and on a fetch into the cache."""
    bucket = s3_server.create_bucket()
    storage = S3Storage(bucket, "p", tmp_path / "cache")
    storage.put_bytes("models/m", b"the real weights")
    recorded = s3_server.client().head_object(Bucket=bucket, Key="p/models/m")["Metadata"]["sha256"]
    assert recorded == hashlib.sha256(b"the real weights").hexdigest()
    s3_server.client().put_object(
        Bucket=bucket, Key="p/models/m", Body=b"swapped weights!", Metadata={"sha256": recorded}
    )
    with pytest.raises(StoredFileCorrupt, match="sha256"):
        storage.local_path("models/m")
    assert not (tmp_path / "cache" / bucket / "p" / "models" / "m").exists()
    with pytest.raises(StoredFileCorrupt), storage.open("models/m") as f:
        f.read()
    with storage.open("models/m") as f:  # a range is not a whole-file read: served as stored
        f.seek(8)
        assert f.read(7) == b"weights"


def test_s3_storage_chosen_by_settings(tmp_path: Path, s3_server: S3Server, s3_env: dict[str, str]) -> None:
    bucket = s3_server.create_bucket()
    settings = Settings(data_dir=tmp_path, storage_url=f"s3://{bucket}/deploy/one")
    storage = make_storage(settings)
    assert isinstance(storage, S3Storage) and make_storage(settings) is storage
    storage.put_bytes("artifacts/x.png", b"png")
    assert (
        s3_server.client().get_object(Bucket=bucket, Key="deploy/one/artifacts/x.png")["Body"].read()
        == b"png"
    )
    assert storage.local_path("artifacts/x.png").parent.is_relative_to(tmp_path / "cache" / "objects")
    assert check_storage(settings) == (True, "storage writable")
    missing = Settings(data_dir=tmp_path, storage_url="s3://no-such-bucket-here")
    ok, detail = check_storage(missing)
    assert not ok and "NoSuchBucket" in detail


@pytest.mark.parametrize(
    "url", ["s3://", "s3://UPPER", "s3://b", "http://x/y", "s3://bucket/../up", "s3://bucket/a//b"]
)
def test_bad_storage_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="storage_url must be s3://bucket"):
        Settings(storage_url=url)


def test_s3_errors_other_than_missing_are_not_hidden(tmp_path: Path, s3_env: dict[str, str]) -> None:
    storage = S3Storage("no-such-bucket-here", "", tmp_path)
    with pytest.raises(ClientError):
        storage.put_bytes("a", b"x")


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
