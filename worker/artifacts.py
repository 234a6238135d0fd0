"""Files a job produces: the one place that writes an output to storage and records its Artifact row."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import Artifact, Job
from worker.storage import Storage


def store_artifact(
    session: Session,
    storage: Storage,
    *,
    job_id: str,
    kind: str,
    name: str,
    content_type: str,
    data: bytes,
) -> str:
    """Write one output file and its Artifact row, owned like its job; returns the artifact id.

    A re-run job (its worker died) writes the same names again: the earlier attempt's row is replaced,
    so a job never lists two files under one name.
    """
    job = session.get(Job, job_id)
    owner = job.owner_key if job is not None else None
    key = storage.put_bytes(f"artifacts/{job_id}/{name}", data)
    session.execute(sa.delete(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))
    row = Artifact(
        job_id=job_id,
        kind=kind,
        name=name,
        file_key=key,
        content_type=content_type,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        owner_key=owner,
    )
    session.add(row)
    session.commit()
    return row.id
