"""Projection wire format. A projection is a job of kind `projection`; its row becomes this in
`projection_out` only."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.jobs import JobStateName

if TYPE_CHECKING:
    from worker.db.models import Job


class ProjectionOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "8c0d5a1e-2b7f-4f31-9a43-6d2e1c9b7a50",
                    "model_id": "5b6f7c1d-0e2a-4c3b-8d9e-1f2a3b4c5d6e",
                    "state": "succeeded",
                    "progress": 1.0,
                    "progress_detail": {"phase": "optimize", "step": 1000, "steps": 1000, "loss": 0.21},
                    "space": "w",
                    "steps": 1000,
                    "seed": 303,
                    "save_video": False,
                    "distance": 0.2093,
                    "error": None,
                    "created_at": "2026-01-01T12:00:00Z",
                    "finished_at": "2026-01-01T12:01:10Z",
                    "job_url": "/v1/jobs/8c0d5a1e-2b7f-4f31-9a43-6d2e1c9b7a50",
                    "w_url": "/v1/artifacts/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                    "image_url": "/v1/artifacts/1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
                    "target_url": "/v1/artifacts/2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
                    "video_url": None,
                    "render_url": "/v1/models/5b6f7c1d-0e2a-4c3b-8d9e-1f2a3b4c5d6e/images/w/"
                    "8c0d5a1e-2b7f-4f31-9a43-6d2e1c9b7a50.png",
                }
            ]
        }
    )

    id: str = Field(description="The projection id, which is also its job id.")
    model_id: str
    state: JobStateName
    progress: float = Field(ge=0.0, le=1.0)
    progress_detail: Any = Field(
        default=None,
        description="While optimising: {phase, step, steps, loss, distance}; then {phase: video, frame, frames}.",
    )
    space: Literal["w", "w+"]
    steps: int
    seed: int
    save_video: bool
    distance: float | None = Field(
        default=None, description="Perceptual distance from the reconstruction (proj.png) to the target."
    )
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    job_url: str
    w_url: str | None = Field(
        default=None, description='projected_w.npz: key "w", float32 [1, num_ws, w_dim].'
    )
    image_url: str | None = Field(default=None, description="proj.png: the projected w rendered.")
    target_url: str | None = Field(default=None, description="target.png: the target as the model saw it.")
    video_url: str | None = Field(
        default=None, description="proj.mp4: target | projection, one frame per step."
    )
    render_url: str | None = Field(
        default=None, description="Renders the projected w (sampling route); `mix.png?row=w:{id}` mixes it."
    )


def _artifact_url(result: dict[str, Any], key: str) -> str | None:
    artifact_id = result.get(key)
    return f"/v1/artifacts/{artifact_id}" if artifact_id else None


def projection_out(row: Job) -> ProjectionOut:
    """The one place a projection job row becomes its wire form."""
    params = row.params or {}
    result: dict[str, Any] = row.result or {}
    done = row.state == "succeeded"
    return ProjectionOut(
        id=row.id,
        model_id=params["model_id"],
        state=row.state,  # type: ignore[arg-type]  # the CHECK constraint keeps it one of JobStateName
        progress=row.progress,
        progress_detail=row.progress_detail or None,
        space=params["space"],
        steps=params["steps"],
        seed=params["seed"],
        save_video=params["save_video"],
        distance=result.get("distance"),
        error=row.error,
        created_at=row.created_at,
        finished_at=row.finished_at,
        job_url=f"/v1/jobs/{row.id}",
        w_url=_artifact_url(result, "w_artifact_id"),
        image_url=_artifact_url(result, "image_artifact_id"),
        target_url=_artifact_url(result, "target_artifact_id"),
        video_url=_artifact_url(result, "video_artifact_id"),
        render_url=f"/v1/models/{params['model_id']}/images/w/{row.id}.png" if done else None,
    )
