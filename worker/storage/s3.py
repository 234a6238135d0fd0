"""S3-compatible object storage (AWS S3, MinIO, Ceph RGW, moto...) behind the `Storage` interface.

boto3 does the protocol: endpoint, credentials and region come from the standard AWS variables
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`), and its managed
transfer uploads large files in parts (each part checked by the server against its SHA-256) and
downloads them in parallel ranges, never holding a whole file in memory.

What boto3 does not do, and this module does:
- the file's sha256 is stored in the object's metadata when it is written and checked when a whole file
  is read back (a full sequential read, or a copy into the local cache), so a damaged or swapped object
  is an error instead of a silently wrong model;
- readers are seekable and fetch only the bytes asked for (`Range: bytes=pos-` from the current
  position), which is how a zip is read without downloading it and how a download route answers a Range
  request from the object store;
- `local_path` keeps a checked copy in a cache directory on this machine, reused while the object's
  ETag is unchanged, for code that needs a path (torch loading a model, a resumed checkpoint, ffmpeg).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from gan.io.files import file_sha256
from worker.storage.keys import COPY_CHUNK, StoredFileCorrupt, check_key

# boto3's defaults (8 MiB parts) cost one request per 8 MiB; 16 MiB halves that for multi-GB models
# while staying far from S3's 10,000-part cap (160 GB). S3 refuses parts under 5 MiB.
MULTIPART_THRESHOLD = 16 * 1024**2
MULTIPART_CHUNK = 16 * 1024**2
SHA256_META = "sha256"
_MISSING = {"404", "NoSuchKey", "NotFound"}


def make_client() -> Any:
    """An S3 client configured by the standard AWS variables. AWS_REGION is honoured as the other
    SDKs do (botocore itself reads only AWS_DEFAULT_REGION). Path-style addressing whenever an endpoint
    is given: `bucket.minio:9000` would not resolve, `minio:9000/bucket` does."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        s3={"addressing_style": "path" if endpoint else "auto"},
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=60,
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    return boto3.session.Session().client("s3", region_name=region, config=config)


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


class S3Storage:
    """Objects under `s3://bucket/prefix/`; a local cache directory for `local_path`."""

    def __init__(self, bucket: str, prefix: str, cache_dir: Path, client: Any | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache_dir = Path(cache_dir)
        self.client = client if client is not None else make_client()
        self.transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNK
        )

    def __repr__(self) -> str:
        return f"S3Storage(s3://{self.bucket}/{self.prefix})"

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _head(self, key: str) -> dict[str, Any]:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self._name(key)))
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(f"no stored file with key {key!r}") from None
            raise

    # --- writing: one PUT (or one completed multipart upload) makes the object appear whole

    def put_bytes(self, key: str, data: bytes) -> str:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._name(key),
            Body=data,
            Metadata={SHA256_META: hashlib.sha256(data).hexdigest()},
            ChecksumAlgorithm="SHA256",
        )
        return key

    def put_file(self, key: str, source: Path | BinaryIO) -> str:
        """Upload a file, or a stream spooled to a temp file on disk first: the sha256 goes into the
        object's metadata, which S3 takes only before the upload starts."""
        name = self._name(key)
        if isinstance(source, Path):
            self._upload(source, name)
            return key
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.cache_dir, prefix=".spool-", suffix=".tmp") as spool:
            shutil.copyfileobj(source, spool, COPY_CHUNK)
            spool.flush()
            self._upload(Path(spool.name), name)
        return key

    def _upload(self, path: Path, name: str) -> None:
        self.client.upload_file(
            str(path),
            self.bucket,
            name,
            ExtraArgs={"Metadata": {SHA256_META: file_sha256(path)}, "ChecksumAlgorithm": "SHA256"},
            Config=self.transfer,
        )

    # --- reading

    def open(self, key: str) -> BinaryIO:
        head = self._head(key)
        raw = _RangeReader(
            self.client,
            self.bucket,
            self._name(key),
            size=int(head["ContentLength"]),
            etag=str(head["ETag"]),
            sha256=head.get("Metadata", {}).get(SHA256_META),
        )
        return io.BufferedReader(raw, buffer_size=COPY_CHUNK)

    def local_path(self, key: str) -> Path:
        """A checked copy of the object under the cache directory, fetched again only when the object's
        ETag changed (keys are rarely rewritten, but they may be: the copy must not go stale)."""
        head = self._head(key)
        etag = str(head["ETag"])
        target = self.cache_dir / self.bucket / self._name(key)
        marker = target.with_name(f".{target.name}.etag")
        with contextlib.suppress(OSError):
            if target.is_file() and marker.read_text() == etag:
                return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            # A file replaced mid-download cannot leave a mix of two versions: the transfer pins the
            # parts to one ETag, and the sha256 below is the recorded one.
            self.client.download_file(self.bucket, self._name(key), str(tmp), Config=self.transfer)
            expected = head.get("Metadata", {}).get(SHA256_META)
            if expected is not None and file_sha256(tmp) != expected:
                raise StoredFileCorrupt(f"stored file {key!r} does not match its recorded sha256")
            os.replace(tmp, target)
            marker.write_text(etag)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except FileNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        """Remove the object and any cached copy; deleting a missing key is not an error."""
        name = self._name(key)
        self.client.delete_object(Bucket=self.bucket, Key=name)
        target = self.cache_dir / self.bucket / name
        target.unlink(missing_ok=True)
        target.with_name(f".{target.name}.etag").unlink(missing_ok=True)


class _RangeReader(io.RawIOBase):
    """A seekable reader over one object version: each read continues one `Range: bytes=pos-` GET and a
    seek drops it, so only the bytes asked for are fetched. A read from 0 to the end without a seek is
    checked against the recorded sha256."""

    def __init__(
        self, client: Any, bucket: str, name: str, *, size: int, etag: str, sha256: str | None
    ) -> None:
        super().__init__()
        self.client, self.bucket, self.name = client, bucket, name
        self.size, self.etag, self.expected = size, etag, sha256
        self.pos = 0
        self.body: Any = None
        self.hasher: Any = hashlib.sha256() if sha256 is not None else None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        target = base + offset
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target != self.pos:
            self._drop_body()
            self.hasher = None  # no longer one sequential pass
            self.pos = target
        return self.pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.pos >= self.size or len(view) == 0:
            return 0
        if self.body is None:
            reply = self.client.get_object(
                Bucket=self.bucket, Key=self.name, Range=f"bytes={self.pos}-", IfMatch=self.etag
            )
            self.body = reply["Body"]
        data = self.body.read(min(len(view), self.size - self.pos))
        if not data:
            raise OSError(f"object {self.name!r} ended at byte {self.pos} of {self.size}")
        view[: len(data)] = data
        self.pos += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
            if self.pos == self.size and self.hasher.hexdigest() != self.expected:
                raise StoredFileCorrupt(f"stored object {self.name!r} does not match its recorded sha256")
        return len(data)

    def _drop_body(self) -> None:
        if self.body is not None:
            with contextlib.suppress(Exception):
                self.body.close()
            self.body = None

    def close(self) -> None:
        self._drop_body()
        super().close()
