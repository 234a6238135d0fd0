"""Training job wire format: the request (the job kind's own params plus a webhook) and the job view
with its preview and checkpoints."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.jobs import WEBHOOK_URL_FIELD, JobOut, job_out
from worker.job_kinds import TrainingParams
from worker.wire import Name

if TYPE_CHECKING:
    from worker.db.models import Checkpoint, Job


class TrainingJobCreate(TrainingParams):
    """`worker.tasks.training.TrainingParams` (one definition for the API and the worker) plus a webhook."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset_id": "7c0e5f9a-2b4d-4e0b-8a51-3d2f9c1e6b70",
                    "base_model_id": "0b8f3c1e-5a2d-4f6e-9c7b-1d2e3f4a5b6c",
                    "kimg": 200,
                    "batch": 16,
                    "gamma": 10,
                    "aug": "ada",
                    "mirror": True,
                    "snap": 5,
                },
                {
                    "dataset_id": "7c0e5f9a-2b4d-4e0b-8a51-3d2f9c1e6b70",
                    "cfg": "stylegan3-t",
                    "kimg": 5000,
                    "gpus": 4,
                },
            ]
        },
    )

    webhook_url: Name | None = WEBHOOK_URL_FIELD

    def job_params(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"webhook_url"})


class CheckpointOut(BaseModel):
    id: str
    kimg: float
    size_bytes: int
    sha256: str
    metrics: dict[str, Any]
    created_at: datetime


class TrainingJobOut(JobOut):
    """A job (as `GET /v1/jobs/{id}`) plus the training view: the latest preview and the checkpoints."""

    progress_detail: Any = Field(
        default=None,
        description="The latest progress line, written at every tick end and every few seconds within "
        "a tick: kimg, total_kimg, images_seen, fraction, sec_per_kimg and eta_seconds (from the measured "
        "speed); tick on a tick's last line (with losses, augment_p and metrics), None within a tick "
        "(in_tick says which); preview_url, checkpoints, attempt, resumed_from_kimg, and world_size (the "
        "ranks training, `gpus`).",
    )
    preview_url: str | None = Field(
        default=None, description="The latest preview grid (an artifact), updated every snapshot."
    )
    checkpoints: list[CheckpointOut] = Field(
        default_factory=list, description="Kept checkpoints, oldest first (the last 3)."
    )
    model_id: str | None = Field(default=None, description="The model this job registered, once succeeded.")
    events_url: str = Field(description="Server-Sent Events stream of this job's progress.")


def training_job_out(row: Job, checkpoints: list[Checkpoint], preview_url: str | None) -> TrainingJobOut:
    base = job_out(row).model_dump()
    result = row.result or {}
    return TrainingJobOut(
        **base,
        preview_url=preview_url,
        checkpoints=[
            CheckpointOut(
                id=c.id,
                kimg=c.kimg,
                size_bytes=c.size_bytes,
                sha256=c.sha256,
                metrics=c.metrics or {},
                created_at=c.created_at,
            )
            for c in checkpoints
        ],
        model_id=result.get("model_id"),
        events_url=f"/v1/jobs/{row.id}/events",
    )
