"""Local storage: files under one root directory, written atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from worker.storage.keys import COPY_CHUNK, InvalidKey, check_key


class LocalStorage:
    """Files under one root directory; `local_path` lets torch and ffmpeg read them in place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        # check_key already forbids "..", this also catches a symlink inside the root pointing out.
        if not path.is_relative_to(self.root):
            raise InvalidKey(f"storage key {key!r} resolves outside the storage root")
        return path

    def put_bytes(self, key: str, data: bytes) -> str:
        """Store `data` under `key` (replacing any old file) and return the key."""
        with self._atomic_writer(key) as out:
            out.write(data)
        return key

    def put_file(self, key: str, source: Path | BinaryIO) -> str:
        """Copy a file or a readable binary stream under `key` and return the key."""
        with self._atomic_writer(key) as out:
            if isinstance(source, Path):
                with source.open("rb") as src:
                    shutil.copyfileobj(src, out, COPY_CHUNK)
            else:
                shutil.copyfileobj(source, out, COPY_CHUNK)
        return key

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no stored file with key {key!r}")
        return path

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the file; deleting a missing key is not an error (deletes are retried)."""
        self._path(key).unlink(missing_ok=True)

    def _atomic_writer(self, key: str) -> _AtomicWriter:
        return _AtomicWriter(self._path(key))


class _AtomicWriter:
    """Write to a temp file in the target's directory, fsync, then rename over the target.

    A crash leaves either the old file or the new one, never a truncated mix; the directory is fsynced
    too so that the rename itself survives a power cut.
    """

    def __init__(self, target: Path) -> None:
        self.target = target

    def __enter__(self) -> BinaryIO:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.name}.", suffix=".tmp")
        self.tmp = Path(tmp)
        self.file: BinaryIO = os.fdopen(fd, "wb")
        return self.file

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self.file.flush()
                os.fsync(self.file.fileno())
            self.file.close()
            if exc_type is None:
                os.replace(self.tmp, self.target)
                dir_fd = os.open(self.target.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        finally:
            self.tmp.unlink(missing_ok=True)
