"""Turning a network file from a user into a stored model, without trusting the file.

Every file (an upload, a URL or catalogue download, the bundled demo) goes the same way:

1. its sha256 is known before anything reads it, so a second copy for the same owner is answered with
   the existing model and never parsed again;
2. a child process (`python -m worker.inspect_model`) reads it under an address-space cap, a CPU-time
   cap and a wall-clock timeout, through gan/'s allowlisted loader, and writes our safetensors format
   with the licence note and source; a refusal comes back as that child's one-line message;
3. the converted file is stored once at `models/<sha256 of the uploaded bytes>.safetensors` (every
   owner's row for the same bytes shares it), and only then the row is committed.

A refused file leaves nothing: no stored file, no row, and the converted temp file is removed. The
caller owns (and removes) the source file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gan.errors import GanError
from worker.db.models import Model
from worker.inspect_model import ERROR_PREFIX, EXIT_MEMORY, EXIT_OK, EXIT_REFUSED
from worker.job_kinds import MAX_NAME_LENGTH
from worker.storage import Storage

if TYPE_CHECKING:
    from worker.settings import Settings

log = logging.getLogger(__name__)


class ModelImportError(GanError):
    """A network file the service will not import; the message says why in one line.

    A GanError because the file is bad input: the API answers 422 with the message, and a failed
    import job shows it as its error.
    """


@dataclass(frozen=True)
class ImportLimits:
    """What reading one file in the child may cost (see the import_* settings)."""

    memory_bytes: int = 4 * 1024**3
    cpu_seconds: int = 60
    timeout_seconds: float = 120.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ImportLimits:
        return cls(
            memory_bytes=settings.import_max_memory_bytes,
            cpu_seconds=settings.import_max_cpu_seconds,
            timeout_seconds=settings.import_timeout_seconds,
        )


@dataclass(frozen=True)
class ImportedNetwork:
    """What the child read from the file (the JSON line it printed)."""

    format: str  # "ours", "official-pkl" or "tf-pkl"
    architecture: str
    resolution: int
    img_channels: int
    z_dim: int
    w_dim: int
    c_dim: int
    num_ws: int
    num_params: int
    license_note: str | None
    source: str | None
    config: dict[str, Any]


def model_key(sha256: str) -> str:
    """The storage key of the converted file for uploaded bytes with this sha256."""
    return f"models/{sha256}.safetensors"


def scratch_dir(settings: Settings) -> Path:
    """Where uploads and downloads wait while they are checked: under the data dir, so a large file
    lands on the volume meant for data rather than a small /tmp, and on the same filesystem as storage."""
    path = settings.data_dir / "tmp" / "imports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def scratch_file(directory: Path, suffix: str) -> Path:
    """A new, unique path in `directory` (not created)."""
    return directory / f"{uuid.uuid4().hex}{suffix}"


# --- the sandboxed read --------------------------------------------------------------------------------


def run_sandboxed_import(
    src: Path,
    dst: Path,
    limits: ImportLimits,
    *,
    license_note: str | None = None,
    source: str | None = None,
) -> ImportedNetwork:
    """Read `src` in a limited child process and write our format to `dst`; ModelImportError if the
    file is refused or the child ran out of memory or time. `dst` is removed on failure."""
    command = [
        sys.executable, "-m", "worker.inspect_model", str(src), str(dst),
        "--memory-bytes", str(limits.memory_bytes), "--cpu-seconds", str(limits.cpu_seconds),
    ]  # fmt: skip
    if license_note is not None:
        command += ["--license-note", license_note]
    if source is not None:
        command += ["--source", source]
    # One thread: reading and re-saving is memory-bound, and each extra OpenMP thread reserves address
    # space that counts against the cap.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
        )
        try:
            out, err = process.communicate(timeout=limits.timeout_seconds)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            raise ModelImportError(
                f"reading the file took longer than {limits.timeout_seconds:g} s "
                "(STYLEGAN_IMPORT_TIMEOUT_SECONDS) and was stopped"
            ) from None
        finally:
            _kill_group(process)  # nothing the child started may outlive it
        return _outcome(
            process.returncode, out.decode(errors="replace"), err.decode(errors="replace"), limits
        )
    except BaseException:
        dst.unlink(missing_ok=True)
        raise


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _outcome(code: int, out: str, err: str, limits: ImportLimits) -> ImportedNetwork:
    if code == EXIT_OK:
        lines = out.strip().splitlines()
        return ImportedNetwork(**json.loads(lines[-1]))
    if code == EXIT_REFUSED:
        messages = [line[len(ERROR_PREFIX) :] for line in err.splitlines() if line.startswith(ERROR_PREFIX)]
        raise ModelImportError(messages[-1] if messages else "the file was refused")
    if code == EXIT_MEMORY:
        raise ModelImportError(
            f"reading the file needed more than the import memory limit of {limits.memory_bytes // 2**20} MiB "
            "(STYLEGAN_IMPORT_MAX_MEMORY_BYTES)"
        )
    if code == -signal.SIGXCPU:
        raise ModelImportError(
            f"reading the file used more than the import CPU limit of {limits.cpu_seconds} s "
            "(STYLEGAN_IMPORT_MAX_CPU_SECONDS) and was stopped"
        )
    if code == -signal.SIGKILL:
        # The CPU hard limit, or the kernel's OOM killer when the host ran short before our cap did.
        raise ModelImportError(
            f"the import process was killed (SIGKILL): it went past the CPU limit of {limits.cpu_seconds} s "
            "or the machine ran out of memory"
        )
    log.error("model import child failed with exit code %s:\n%s", code, err[-4000:])
    raise ModelImportError(f"the import process failed unexpectedly (exit code {code}); see the server log")


# --- registering -----------------------------------------------------------------------------------------


def find_model(session: Session, owner_key: str | None, sha256: str) -> Model | None:
    """This owner's model for these uploaded bytes, if any (owner None: the rows without an owner)."""
    owner_clause = Model.owner_key.is_(None) if owner_key is None else Model.owner_key == owner_key
    return session.scalars(sa.select(Model).where(owner_clause, Model.sha256 == sha256)).first()


def default_name(filename: str | None, sha256: str) -> str:
    stem = Path(filename).stem if filename else ""
    return (stem or f"model-{sha256[:12]}")[:MAX_NAME_LENGTH]


def register_model(
    session: Session,
    storage: Storage,
    *,
    src: Path,
    sha256: str,
    owner_key: str | None,
    name: str,
    source: str,
    limits: ImportLimits,
    scratch: Path,
    license_note: str | None = None,
    job_id: str | None = None,
) -> tuple[Model, bool]:
    """The owner's model for the file at `src` (whose sha256 the caller computed while receiving it),
    imported now if it is new: returns (model, created)."""
    existing = find_model(session, owner_key, sha256)
    if existing is not None:
        return existing, False

    key = model_key(sha256)
    converted = scratch_file(scratch, ".safetensors")
    wrote = False
    try:
        info = run_sandboxed_import(src, converted, limits, license_note=license_note, source=source)
        if not storage.exists(key):
            storage.put_file(key, converted)
            wrote = True
        model = Model(
            name=name[:MAX_NAME_LENGTH],
            architecture=info.architecture,
            resolution=info.resolution,
            img_channels=info.img_channels,
            z_dim=info.z_dim,
            w_dim=info.w_dim,
            c_dim=info.c_dim,
            num_ws=info.num_ws,
            file_key=key,
            sha256=sha256,
            size_bytes=storage.size(key),
            format=info.format,
            config=info.config,
            num_params=info.num_params,
            source=source,
            license_note=info.license_note,
            owner_key=owner_key,
            job_id=job_id,
        )
        session.add(model)
        try:
            session.commit()
        except IntegrityError:
            # The same owner sent the same bytes twice at once; the other request won.
            session.rollback()
            winner = find_model(session, owner_key, sha256)
            if winner is None:
                raise
            return winner, False
        return model, True
    except BaseException:
        session.rollback()
        if wrote and not _key_in_use(session, key):
            storage.delete(key)
        raise
    finally:
        converted.unlink(missing_ok=True)


def _key_in_use(session: Session, key: str) -> bool:
    return session.scalar(sa.select(sa.func.count()).select_from(Model).where(Model.file_key == key)) != 0


def delete_model_file_if_unused(session: Session, storage: Storage, key: str) -> bool:
    """Remove the stored file once no row refers to it (rows of other owners may share it)."""
    if _key_in_use(session, key):
        return False
    storage.delete(key)
    return True
