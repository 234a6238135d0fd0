"""The `video` job: a latent walk (gan.video) encoded as MP4, GIF or WebP, stored as an Artifact.

Progress is per rendered frame, written at most every REPORT_INTERVAL_S (a GPU renders hundreds of
small frames a second; a database write per frame would cost more than the frame), and the last frame
is always written. Cancel is seen between any two frames.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import sqlalchemy as sa
import torch
from sqlalchemy.orm import Session

from gan.editing import Sweep
from gan.errors import GanError
from gan.video import check_video_options, encode_video, walk_frames
from worker.artifacts import store_artifact
from worker.db.models import Artifact, Job, Model
from worker.directions import lookup, resolve_edits
from worker.inference.engine import shared_cache
from worker.job_kinds import VideoParams
from worker.tasks.context import JobContext
from worker.tasks.mix_grid import artifact_result
from worker.tasks.projection import W_ARTIFACT

REPORT_INTERVAL_S = 0.25
RENDER_BATCH = 8
CONTENT_TYPES = {"mp4": "video/mp4", "gif": "image/gif", "webp": "image/webp"}


def run_video(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    p = VideoParams.model_validate(params)
    if p.frames > ctx.settings.video_max_frames:
        raise GanError(f"frames: {p.frames} is over the limit of {ctx.settings.video_max_frames}")
    check_video_options(p.format, p.fps)
    sweep = None
    with ctx.sessions() as session:
        file_key = ctx.load_visible(session, Model, p.model_id).file_key
        edits = resolve_edits(session, p.model_id, p.edit, ctx.owner_key)
        if p.sweep is not None:
            found = lookup(session, p.model_id, [p.sweep.direction], ctx.owner_key).get(p.sweep.direction)
            if found is None:
                raise GanError(f"sweep.direction: this model has no direction {p.sweep.direction!r}")
            sweep = Sweep(found, p.sweep.start, p.sweep.stop, p.sweep.layers)
        start_ws = None if p.start_projection is None else projected_w(ctx, session, p.start_projection)
    ctx.report(0.0, {"stage": "loading model", "frame": 0, "frames": p.frames})
    sampler = shared_cache(ctx.settings).get(file_key).sampler
    frames = walk_frames(
        sampler,
        p.seeds,
        p.frames,
        space=p.space,
        psi=p.psi,
        cutoff=p.cutoff,
        class_idx=p.class_idx,
        noise_mode=p.noise,
        loop=p.loop,
        translate=p.translate,
        rotate=p.rotate,
        batch_size=RENDER_BATCH,
        edits=edits,
        sweep=sweep,
        start_ws=start_ws,
    )
    data = encode_video(_reporting(frames, ctx, p.frames), p.format, p.fps)
    with ctx.sessions() as session:
        artifact_id = store_artifact(
            session,
            ctx.storage,
            job_id=ctx.job_id,
            kind="video",
            name=f"video.{p.format}",
            content_type=CONTENT_TYPES[p.format],
            data=data,
        )
    return artifact_result(
        artifact_id, CONTENT_TYPES[p.format], len(data), frames=p.frames, fps=p.fps, format=p.format
    )


def projected_w(ctx: JobContext, session: Session, projection_id: str) -> torch.Tensor:
    """The w [num_ws, w_dim] a finished projection job of this job's owner found."""
    job = ctx.load_visible(session, Job, projection_id)
    artifact = session.scalars(
        sa.select(Artifact).where(Artifact.job_id == job.id, Artifact.name == W_ARTIFACT[0])
    ).one_or_none()
    if job.kind != "projection" or artifact is None:
        raise GanError(f"start_projection: {projection_id} is not a finished projection")
    with ctx.storage.open(artifact.file_key) as f:
        data = f.read()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        w = np.asarray(npz["w"], dtype=np.float32)
    return torch.from_numpy(w.reshape(w.shape[-2], w.shape[-1]))


def _reporting(frames: Iterator[np.ndarray], ctx: JobContext, total: int) -> Iterator[np.ndarray]:
    """Pass frames through, reporting progress (rendering is the work; encoding is a small share)."""
    last = 0.0
    for index, frame in enumerate(frames, start=1):
        now = time.monotonic()
        if index == total or now - last >= REPORT_INTERVAL_S:
            ctx.report(0.95 * index / total, {"stage": "rendering", "frame": index, "frames": total})
            last = now
        else:
            ctx.check()
        yield frame
    ctx.report(0.95, {"stage": "encoding", "frame": total, "frames": total})
