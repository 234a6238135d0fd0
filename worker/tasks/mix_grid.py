"""The `mix_grid` job: a style-mixing grid PNG, the grid.png that `stylegan mix` writes.

Runs on the inference queue with the inference worker's loaded models (worker/inference/engine.py),
rendering 8 images per forward pass as the command does by default, so the grid matches the command's.
The grid is stored as an Artifact (served by GET /v1/artifacts/{id}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gan.errors import GanError
from worker.tasks.context import JobContext

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from worker.db.models import Model

MAX_SEED = 2**32 - 1
# The command's default --batch: the same batches give the same float summation order, so the same pixels.
RENDER_BATCH = 8


class MixGridParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=36)
    rows: list[int] = Field(min_length=1, max_length=16)
    cols: list[int] = Field(min_length=1, max_length=16)
    styles: str = Field(default="0-6", min_length=1, max_length=200)
    psi: float = Field(default=0.7, ge=-2.0, le=2.0, allow_inf_nan=False)
    cutoff: int | None = Field(default=None, ge=1)
    noise: Literal["const", "random", "none"] = "const"
    class_idx: int | None = Field(default=None, ge=0)


class ModelGone(GanError):
    """The job's model was deleted (or never visible to the job's owner) before the job ran."""


def job_model(session: Session, job_id: str, model_id: str) -> Model:
    """The model row a job works on, visible to the job's owner only (as over HTTP)."""
    from worker.db.models import Job, Model

    job = session.get(Job, job_id)
    model = session.get(Model, model_id)
    if job is None or model is None or model.owner_key != job.owner_key:
        raise ModelGone(f"model {model_id} no longer exists")
    return model


def artifact_result(artifact_id: str, content_type: str, size: int, **extra: Any) -> dict[str, Any]:
    return {
        "artifact_id": artifact_id,
        "url": f"/v1/artifacts/{artifact_id}",
        "content_type": content_type,
        "size_bytes": size,
        **extra,
    }


def run_mix_grid(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    from gan.mixing import mix_grid, parse_styles, style_bands, style_mix
    from worker.artifacts import store_artifact
    from worker.celery_app import process_sessions
    from worker.inference.engine import shared_cache
    from worker.inference.render import encode_image
    from worker.storage import make_storage

    p = MixGridParams.model_validate(params)
    sessions = process_sessions(ctx.settings)
    with sessions() as session:
        file_key = job_model(session, ctx.job_id, p.model_id).file_key
    cells = len(p.rows) * len(p.cols)
    ctx.report(0.0, {"stage": "loading model", "cells": cells})
    sampler = shared_cache(ctx.settings).get(file_key).sampler
    styles = parse_styles(p.styles, sampler.num_ws, style_bands(sampler.config))
    ctx.report(0.1, {"stage": "rendering", "cells": cells})
    images = style_mix(
        sampler,
        p.rows,
        p.cols,
        styles,
        psi=p.psi,
        noise_mode=p.noise,
        cutoff=p.cutoff,
        class_idx=p.class_idx,
        batch_size=RENDER_BATCH,
    )
    grid = mix_grid(images, p.rows, p.cols)
    data = encode_image(grid, "png")
    ctx.report(0.9, {"stage": "storing", "cells": cells})
    with sessions() as session:
        artifact_id = store_artifact(
            session,
            make_storage(ctx.settings),
            job_id=ctx.job_id,
            kind="image",
            name="grid.png",
            content_type="image/png",
            data=data,
        )
    height, width = grid.shape[:2]
    return artifact_result(
        artifact_id, "image/png", len(data), width=int(width), height=int(height), styles=styles
    )
