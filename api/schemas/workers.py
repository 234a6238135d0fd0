"""Worker wire format. A WorkerPresence row becomes a `WorkerOut` in `worker_out` only."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from worker.db.models import WorkerPresence


class WorkerOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "stylegan-4242@gpu-node-1",
                    "hostname": "gpu-node-1",
                    "pid": 4242,
                    "queues": ["inference"],
                    "device": "cuda:0 (NVIDIA H200)",
                    "concurrency": 66,
                    "loaded_models": ["5d8a5a1e-3c0b-4f7e-9c55-0b8e7f0e2a61"],
                    "started_at": "2026-01-01T12:00:00Z",
                    "last_seen": "2026-01-01T12:05:00Z",
                }
            ]
        }
    )

    name: str = Field(description="The Celery node name, unique per broker.")
    hostname: str
    pid: int
    queues: list[str] = Field(description="The queues it consumes: inference, training.")
    device: str = Field(description="`cpu`, or `cuda:N (GPU name)`.")
    concurrency: int = Field(description="Jobs or sampling requests it runs at once.")
    loaded_models: list[str] = Field(
        description="Ids of the models (of those the caller may see) that it holds loaded for sampling."
    )
    started_at: datetime
    last_seen: datetime = Field(description="Its last heartbeat; a worker silent for a few beats is gone.")


class WorkerList(BaseModel):
    items: list[WorkerOut]


def worker_out(row: WorkerPresence, loaded_models: list[str]) -> WorkerOut:
    return WorkerOut(
        name=row.name,
        hostname=row.hostname,
        pid=row.pid,
        queues=list(row.queues),
        device=row.device,
        concurrency=row.concurrency,
        loaded_models=loaded_models,
        started_at=row.started_at,
        last_seen=row.last_seen,
    )
