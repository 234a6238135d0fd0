"""The editing jobs: `ganspace` (a model's principal directions in W, stored for its owner) and
`edit_grid` (seeds x strengths along one direction, as one PNG artifact).

Both run on the inference queue with the inference worker's loaded models. GANSpace reports progress as
samples mapped; cancel is seen between batches (each `report` checks it).
"""

from __future__ import annotations

from typing import Any

from gan.editing import edit_images, ganspace, grid
from gan.errors import GanError
from gan.sampling import to_uint8
from worker.artifacts import store_artifact
from worker.db.models import Model
from worker.directions import lookup, replace_directions, resolve_edits
from worker.events import append_event
from worker.inference.engine import shared_cache
from worker.inference.render import encode_image
from worker.job_kinds import EditGridParams, GanSpaceParams
from worker.tasks.context import JobContext
from worker.tasks.mix_grid import RENDER_BATCH, artifact_result

# Rows mapped per forward pass: the mapping network is a small MLP, so big batches are cheap.
GANSPACE_BATCH = 2_000


def run_ganspace(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    p = GanSpaceParams.model_validate(params)
    with ctx.sessions() as session:
        file_key = ctx.load_visible(session, Model, p.model_id).file_key
    ctx.report(0.0, {"stage": "loading model", "samples": 0, "total": p.samples})
    sampler = shared_cache(ctx.settings).get(file_key).sampler

    def progress(done: int, total: int) -> None:
        detail = {"stage": "mapping", "samples": done, "total": total}
        ctx.report(0.95 * done / total, detail)
        with ctx.sessions() as session:  # also on the job's event stream, as training's progress is
            append_event(session, ctx.job_id, "progress", {"fraction": 0.95 * done / total, **detail})

    result = ganspace(
        sampler.G, samples=p.samples, k=p.k, seed=p.seed, batch_size=GANSPACE_BATCH, progress=progress
    )
    with ctx.sessions() as session:
        replace_directions(session, p.model_id, result.directions, ctx.owner_key, job_id=ctx.job_id)
    return {
        "model_id": p.model_id,
        "samples": result.samples,
        "directions": [{"id": d.id, "sigma": d.sigma, "variance": d.value} for d in result.directions],
        "url": f"/v1/models/{p.model_id}/directions?method=ganspace&k={p.k}",
    }


def run_edit_grid(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    p = EditGridParams.model_validate(params)
    with ctx.sessions() as session:
        file_key = ctx.load_visible(session, Model, p.model_id).file_key
        direction = lookup(session, p.model_id, [p.direction], ctx.owner_key).get(p.direction)
        base_edits = resolve_edits(session, p.model_id, p.edit, ctx.owner_key)
    if direction is None:
        raise GanError(f"direction: this model has no direction {p.direction!r} (was it deleted?)")
    cells = len(p.seeds) * len(p.strengths)
    ctx.report(0.0, {"stage": "loading model", "cells": cells})
    sampler = shared_cache(ctx.settings).get(file_key).sampler
    ctx.report(0.1, {"stage": "rendering", "cells": cells})
    images = edit_images(
        sampler,
        p.seeds,
        direction,
        p.strengths,
        psi=p.psi,
        cutoff=p.cutoff,
        class_idx=p.class_idx,
        layers=p.layers,
        base_edits=base_edits,
        batch_size=RENDER_BATCH,
    )
    frames = to_uint8(images.flatten(0, 1))  # [S * K, H, W, C], seed-major
    uint8 = frames.reshape(len(p.seeds), len(p.strengths), *frames.shape[1:])
    picture = grid(uint8)
    data = encode_image(picture, "png")
    ctx.report(0.9, {"stage": "storing", "cells": cells})
    with ctx.sessions() as session:
        artifact_id = store_artifact(
            session,
            ctx.storage,
            job_id=ctx.job_id,
            kind="image",
            name="edit-grid.png",
            content_type="image/png",
            data=data,
        )
    height, width = picture.shape[:2]
    return artifact_result(
        artifact_id,
        "image/png",
        len(data),
        width=int(width),
        height=int(height),
        direction=p.direction,
        seeds=p.seeds,
        strengths=p.strengths,
    )
