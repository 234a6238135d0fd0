"""File storage behind one small interface (`Storage`, in keys.py): a local directory (the default) or
an S3-compatible object store (`STYLEGAN_STORAGE_URL=s3://bucket/prefix`), which hosts share.

Callers hold keys, never paths, and get their backend from `make_storage(settings)`.
"""

from __future__ import annotations

import functools
import os

from worker.settings import Settings
from worker.storage.keys import (
    MAX_KEY_LENGTH,
    InvalidKey,
    Storage,
    StoredFileCorrupt,
    check_key,
    new_key,
)
from worker.storage.local import LocalStorage
from worker.storage.s3 import S3Storage

__all__ = [
    "MAX_KEY_LENGTH",
    "InvalidKey",
    "LocalStorage",
    "S3Storage",
    "Storage",
    "StoredFileCorrupt",
    "check_key",
    "make_storage",
    "new_key",
]


def make_storage(settings: Settings) -> Storage:
    """The configured storage: S3Storage for an s3:// storage_url, else files under data_dir/files."""
    if settings.storage_url is None:
        return LocalStorage(settings.data_dir / "files")
    return _s3_storage(settings, os.getpid())


@functools.cache
def _s3_storage(settings: Settings, pid: int) -> S3Storage:
    # One client per process and settings (a boto3 client is thread-safe and costs tens of ms to make);
    # keyed by pid too, so a forked worker child makes its own rather than sharing the parent's sockets.
    bucket, prefix = settings.storage_bucket_and_prefix
    return S3Storage(bucket, prefix, settings.effective_storage_cache_dir)
