"""Artifact wire format. An Artifact row becomes an `ArtifactOut` in `artifact_out` only."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from worker.db.models import Artifact

_EXAMPLE_ID = "0e8d6c4b-9a7f-4e21-b3c5-7d1f2a6b8e90"


class ArtifactOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _EXAMPLE_ID,
                    "job_id": "3f2c9f0e-7b1a-4c52-9d3e-2f7a1f0b8c11",
                    "kind": "video",
                    "name": "walk.mp4",
                    "content_type": "video/mp4",
                    "size_bytes": 1843200,
                    "sha256": "5d41402abc4b2a76b9719d911017c592ae0f6c3b1d2e4f5a6b7c8d9e0f1a2b3c",
                    "created_at": "2026-01-01T12:00:05Z",
                    "url": f"/v1/artifacts/{_EXAMPLE_ID}",
                }
            ]
        }
    )

    id: str
    job_id: str
    kind: str = Field(description="What the file is to its job (grid, video, projected_w, preview, ...).")
    name: str
    content_type: str
    size_bytes: int
    sha256: str = Field(description="Also the artifact's strong ETag.")
    created_at: datetime
    url: str = Field(description="Download URL; supports HEAD and single `Range: bytes=a-b` requests.")


class ArtifactList(BaseModel):
    items: list[ArtifactOut]


def artifact_out(row: Artifact) -> ArtifactOut:
    """The one place an artifact row becomes its wire form."""
    return ArtifactOut(
        id=row.id,
        job_id=row.job_id,
        kind=row.kind,
        name=row.name,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        created_at=row.created_at,
        url=f"/v1/artifacts/{row.id}",
    )
