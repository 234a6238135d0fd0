"""Dataset wire format. A Dataset row becomes a `DatasetOut` in `dataset_out` only."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.tasks.dataset_prepare import stored_rejections

if TYPE_CHECKING:
    from worker.db.models import Dataset

TransformName = Literal["center-crop", "center-crop-wide", "pad"]


class RejectionOut(BaseModel):
    name: str = Field(description="The file's path inside the upload, '/'-separated.")
    reason: str = Field(
        description="One of: not an image, truncated, corrupt image, too small, decompression bomb, "
        "unsafe path, symlink, too many files, too large, compression ratio, unsupported pixel format, "
        "no label, damaged archive entry.",
        examples=["unsafe path"],
    )
    detail: str = Field(default="", examples=["path contains '..'"])


class DatasetOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "7c0e5f9a-2b4d-4e0b-8a51-3d2f9c1e6b70",
                    "name": "faces",
                    "image_count": 498,
                    "resolution": 256,
                    "has_labels": False,
                    "num_classes": None,
                    "size_bytes": 98123456,
                    "rejected_count": 2,
                    "sha256": "9f2b...e1",
                    "rejected": [
                        {
                            "name": "notes.txt",
                            "reason": "not an image",
                            "detail": "Pillow cannot identify it",
                        },
                        {"name": "../evil.png", "reason": "unsafe path", "detail": "path contains '..'"},
                    ],
                    "thumbnails": [
                        "/v1/datasets/7c0e5f9a-2b4d-4e0b-8a51-3d2f9c1e6b70/thumbnails/0.png",
                        "/v1/datasets/7c0e5f9a-2b4d-4e0b-8a51-3d2f9c1e6b70/thumbnails/1.png",
                    ],
                    "job_id": None,
                    "created_at": "2026-01-01T12:00:00Z",
                }
            ]
        }
    )

    id: str
    name: str
    image_count: int = Field(description="Images accepted into the prepared set.")
    resolution: int = Field(description="Side of the prepared square images, in pixels.")
    has_labels: bool
    num_classes: int | None = Field(
        description="Label dimension (classes for class indices); a model trained on this set has this c_dim."
    )
    size_bytes: int = Field(
        description="Bytes stored for the dataset (the prepared zip and its rejection report), as counted "
        "in the key's storage quota."
    )
    sha256: str = Field(description="sha256 of the prepared zip (official dataset_tool layout).")
    rejected: list[RejectionOut] = Field(
        description="Files left out, with their reason: the first 100, names and details cut to 256 "
        "characters; `rejected_count` says how many there were."
    )
    rejected_count: int = Field(description="How many files were left out in all.")
    thumbnails: list[str] = Field(description="URLs of a few prepared images (PNG).")
    job_id: str | None = Field(default=None, description="The dataset_prepare job, for large uploads.")
    created_at: datetime


class DatasetList(BaseModel):
    items: list[DatasetOut]
    total: int
    limit: int
    offset: int


def thumbnail_urls(row: Dataset, count: int) -> list[str]:
    return [f"/v1/datasets/{row.id}/thumbnails/{n}.png" for n in range(min(count, row.image_count))]


def dataset_out(row: Dataset, thumbnails: int) -> DatasetOut:
    """The one place a dataset row becomes its wire form."""
    return DatasetOut(
        id=row.id,
        name=row.name,
        image_count=row.image_count,
        resolution=row.resolution,
        has_labels=row.has_labels,
        num_classes=row.num_classes,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        # Rows written before reports were bounded may hold more; they are cut here as well.
        rejected=[RejectionOut(**r) for r in stored_rejections(row.rejected or [])],
        rejected_count=max(row.rejected_count, len(row.rejected or [])),
        thumbnails=thumbnail_urls(row, thumbnails),
        job_id=row.job_id,
        created_at=row.created_at,
    )
