"""Artifact use cases behind `/v1/artifacts/{id}` and `/v1/jobs/{id}/artifacts`.

Downloads honour one byte range (RFC 9110 §14): `bytes=a-b`, `bytes=a-` and the suffix form `bytes=-n`.
A request for several ranges gets the whole file (200), which §14.2 allows and which every client that
asks for several ranges handles, rather than a multipart/byteranges body nobody here needs. A range
that starts past the end is 416 with `Content-Range: bytes */size`. The ETag is the file's sha256 (a
strong validator: artifacts never change), so `If-Range` and `If-None-Match` compare against it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.errors import NotFound, RangeNotSatisfiable
from api.services.jobs import get_job
from worker.db.models import Artifact
from worker.storage import Storage

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
STREAM_CHUNK = 256 * 1024


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def get_artifact(session: Session, artifact_id: str, *, owner_key: str | None) -> Artifact:
    where = [Artifact.id == artifact_id]
    if owner_key is not None:
        where.append(Artifact.owner_key == owner_key)
    row = session.scalars(sa.select(Artifact).where(*where)).first()
    if row is None:
        raise NotFound(f"no artifact with id {artifact_id!r}")
    return row


def list_job_artifacts(session: Session, job_id: str, *, owner_key: str | None) -> list[Artifact]:
    get_job(session, job_id, owner_key=owner_key)  # 404 for an unknown or another key's job
    rows = session.scalars(
        sa.select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.created_at, Artifact.id)
    )
    return list(rows)


def etag(row: Artifact) -> str:
    return f'"{row.sha256}"'


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range to send, or None for the whole file; RangeNotSatisfiable when it lies outside.

    A header we cannot parse, or one with several ranges, is ignored (whole file), as §14.2 allows.
    """
    if header is None:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _unsatisfiable(header, size)
        return ByteRange(max(0, size - n), size - 1)
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        return None  # syntactically invalid (last < first): ignored, like any invalid range
    if start >= size:
        raise _unsatisfiable(header, size)
    return ByteRange(start, end)


def _unsatisfiable(header: str, size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"header Range: {header!r} lies outside the file of {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )


def read_bytes(storage: Storage, key: str, start: int, length: int) -> Iterator[bytes]:
    """The bytes [start, start + length) of a stored file, in chunks."""
    with storage.open(key) as fh:
        fh.seek(start)
        remaining = length
        while remaining > 0:
            chunk = fh.read(min(STREAM_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
