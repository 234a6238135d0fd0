"""The `mix_grid` job: a style-mixing grid PNG, the grid.png that `stylegan mix` writes.

Runs on the inference queue with the inference worker's loaded models (worker/inference/engine.py),
rendering 8 images per forward pass as the command does by default, so the grid matches the command's.
The grid is stored as an Artifact (served by GET /v1/artifacts/{id}).
"""

from __future__ import annotations

from typing import Any

from gan.mixing import mix_grid, parse_styles, style_bands, style_mix
from worker.artifacts import store_artifact
from worker.db.models import Model
from worker.inference.engine import shared_cache
from worker.inference.render import encode_image
from worker.job_kinds import MixGridParams
from worker.tasks.context import JobContext

# The command's default --batch: the same batches give the same float summation order, so the same pixels.
RENDER_BATCH = 8


def artifact_result(artifact_id: str, content_type: str, size: int, **extra: Any) -> dict[str, Any]:
    return {
        "artifact_id": artifact_id,
        "url": f"/v1/artifacts/{artifact_id}",
        "content_type": content_type,
        "size_bytes": size,
        **extra,
    }


def run_mix_grid(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    p = MixGridParams.model_validate(params)
    with ctx.sessions() as session:
        file_key = ctx.load_visible(session, Model, p.model_id).file_key
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
    with ctx.sessions() as session:
        artifact_id = store_artifact(
            session,
            ctx.storage,
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
