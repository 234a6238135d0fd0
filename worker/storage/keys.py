"""Storage keys and the interface every backend offers.

Callers hold keys (`models/3f2c.../G.safetensors`), never paths or URLs, so a backend is chosen by
settings alone. Keys are relative, slash-separated and checked, so none can escape the root or prefix.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

# Segments of letters, digits, dot, dash, underscore; no empty, "." or ".." segment.
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
MAX_KEY_LENGTH = 500  # the file_key columns are String(500)
COPY_CHUNK = 1024 * 1024


class InvalidKey(ValueError):
    """A storage key that is empty, absolute, too long, or climbs out of the root."""


class StoredFileCorrupt(OSError):
    """A stored file's bytes do not match the sha256 recorded when it was written."""


def check_key(key: str) -> str:
    """Return `key` unchanged if it is a safe relative key; raise InvalidKey otherwise."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"storage key must be 1..{MAX_KEY_LENGTH} characters, got {len(key)}")
    for segment in key.split("/"):
        if not _SEGMENT.match(segment) or segment in {".", ".."}:
            raise InvalidKey(f"storage key {key!r} has an unsafe segment {segment!r}")
    return key


def new_key(prefix: str, filename: str) -> str:
    """A fresh, collision-free key `prefix/<uuid>/filename`."""
    return check_key(f"{prefix}/{uuid.uuid4().hex}/{filename}")


@runtime_checkable
class Storage(Protocol):
    """Where job inputs and outputs live. Writes are all-or-nothing: a reader never sees half a file.

    `open` gives a seekable reader (zip files and byte ranges seek); `local_path` gives a file on this
    machine with the key's bytes (in place for a local directory, a checked copy in a cache directory
    for an object store), for readers that need a path: torch, ffmpeg, a resumed checkpoint.
    """

    def put_bytes(self, key: str, data: bytes) -> str: ...

    def put_file(self, key: str, source: Path | BinaryIO) -> str: ...

    def open(self, key: str) -> BinaryIO: ...

    def local_path(self, key: str) -> Path | None: ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...
