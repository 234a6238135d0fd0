"""The `training` job: `gan.training.loop.train` on a stored dataset, followed live through the job row.

Fine-tuning resumes from the base model's stored generator file (G_ema; D starts fresh, as the
official resume of a pickle without D, sized like the base G unless `cbase`/`cmax` say otherwise);
training from scratch builds the networks from `cfg`. While it runs, a callback turns each tick, and every
few seconds within a tick, into job progress plus a `progress` event (images seen, kimg, sec/kimg, ETA;
`tick` is set only on a tick's last line), each preview grid into an Artifact plus a `preview` event, and
each checkpoint into a stored file, a Checkpoint row and a `checkpoint` event. `should_stop` is asked
after every training step and reads the job's cancel flag from the database at most every
CANCEL_POLL_SECONDS, so a cancel ends the run within a step or two, after a final checkpoint. A re-run
after a lost worker (attempt > 1) resumes exactly from the job's last Checkpoint row (counters,
optimizer, ADA and RNG state), not from zero. On success G_ema is registered as a new Model (`source`
"training:<job id>") whose licence note names the base model, the dataset and the length of the run,
followed by the base model's own note (an NVIDIA licence stays with the weights derived from them).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gan.errors import GanError
from gan.io.checkpoint import convert_network, inspect_network
from gan.io.files import file_sha256
from gan.training.local_ranks import device_kind, train_on_local_ranks
from gan.training.options import TrainOptions
from worker import jobs
from worker.db.models import Artifact, Checkpoint, Dataset, Model
from worker.events import add_event, append_event
from worker.job_kinds import TrainingParams
from worker.storage import Storage
from worker.tasks.context import JobAbandoned, JobCanceled, JobContext
from worker.tasks.dataset_prepare import local_copy

log = logging.getLogger(__name__)

# Stored checkpoints kept per job besides the newest (older ones are deleted as new ones arrive): a
# resume needs only the last; a few more let a user go back past a collapse.
KEEP_CHECKPOINTS = 3
# How often `should_stop` (asked every training step) reads the cancel flag itself. The heartbeat relays
# it too, but only every heartbeat_seconds (10 s by default); one indexed read every 2 s costs nothing
# next to a step, and keeps a cancel's delay to this plus one step.
CANCEL_POLL_SECONDS = 2.0
# Seconds between progress lines within a tick (gan.training.loop.TrainOptions.progress_interval): each
# is a job-row UPDATE and an event INSERT.
PROGRESS_SECONDS = 5.0


# --- reading the job's inputs --------------------------------------------------------------------------


def last_checkpoint(session: Session, job_id: str) -> Checkpoint | None:
    return session.scalars(
        sa.select(Checkpoint)
        .where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.kimg.desc(), Checkpoint.created_at.desc())
        .limit(1)
    ).first()


def _local(storage: Storage, key: str, stack: ExitStack) -> Path:
    return stack.enter_context(local_copy(storage, key))


# --- the callback ---------------------------------------------------------------------------------------


class JobTrainingCallback:
    """Follows one run for the job: progress, events, previews and checkpoints go to the database and
    storage as they happen. Runs in the training thread; the runner's heartbeat thread renews the lease
    and sets the context's cancel/lost flags, which `should_stop` reads."""

    def __init__(
        self,
        ctx: JobContext,
        resumed_from_kimg: float | None,
        clock: Callable[[], float] = time.monotonic,  # tests pass a fake one to step over the poll interval
        world_size: int = 1,
    ) -> None:
        self.ctx = ctx
        self.world_size = world_size
        self.clock = clock
        self.sessions = ctx.sessions
        self.storage = ctx.storage
        self.owner_key = ctx.owner_key
        self.resumed_from_kimg = resumed_from_kimg
        self.preview_url: str | None = None
        self.preview_artifact_id: str | None = None
        self.checkpoint_ids: list[str] = []
        self.previews = 0
        self.last_detail: dict[str, Any] = {}
        self._last_cancel_poll = clock()

    def _check_lost(self) -> None:
        # A cancel must not interrupt a tick half-way (the final checkpoint comes first); a lost lease
        # must: another worker owns the job now and writes its own checkpoints.
        if self.ctx.lost_event.is_set():
            raise JobAbandoned(f"job {self.ctx.job_id}: lease lost; another worker owns it now")

    def start(self, kimg: float, total_kimg: float) -> None:
        detail = self._detail(kimg=kimg, total_kimg=total_kimg, tick=None)
        self._progress(kimg / total_kimg if total_kimg else 0.0, detail)

    def _detail(self, **values: Any) -> dict[str, Any]:
        detail = {
            "attempt": self.ctx.attempt,
            "resumed_from_kimg": self.resumed_from_kimg,
            "preview_url": self.preview_url,
            "checkpoints": len(self.checkpoint_ids),
            "world_size": self.world_size,
        }
        detail.update(values)
        return detail

    def _progress(self, fraction: float, detail: dict[str, Any]) -> None:

        self._check_lost()
        fraction = min(max(fraction, 0.0), 1.0)
        self.last_detail = detail
        self.ctx.report_progress(fraction, detail)
        with self.sessions() as session:
            append_event(session, self.ctx.job_id, "progress", {"fraction": fraction, **detail})

    def on_tick(self, stats: dict[str, Any]) -> None:
        kimg, total = float(stats["kimg"]), float(stats["total_kimg"])
        sec_per_kimg = float(stats.get("sec_per_kimg") or 0.0)
        detail = self._detail(
            kimg=kimg,
            total_kimg=total,
            fraction=float(stats["progress"]),
            eta_seconds=max(total - kimg, 0.0) * sec_per_kimg,
            sec_per_kimg=sec_per_kimg,
            augment_p=stats.get("augment_p"),
            losses={k.removeprefix("Loss/"): v for k, v in stats.items() if k.startswith("Loss/")},
            metrics={k.removeprefix("Metrics/"): v for k, v in stats.items() if k.startswith("Metrics/")},
            images_seen=round(kimg * 1000),
            tick=stats.get("tick"),
        )
        self._progress(float(stats["progress"]), detail)

    def on_progress(self, progress: dict[str, Any]) -> None:
        # Between ticks: `tick` stays None (clients tell tick ends by it); the tick under way is `in_tick`.
        detail = self._detail(
            kimg=float(progress["kimg"]),
            total_kimg=float(progress["total_kimg"]),
            fraction=float(progress["progress"]),
            images_seen=int(progress["images_seen"]),
            sec_per_kimg=float(progress["sec_per_kimg"]),
            eta_seconds=float(progress["eta_seconds"]),
            tick=None,
            in_tick=progress["tick"],
        )
        self._progress(float(progress["progress"]), detail)

    def on_preview(self, path: Path) -> None:

        self._check_lost()
        # The loop names grids by whole kimg, so short ticks repeat a name: the key adds the attempt and
        # a counter, and every preview stays its own artifact.
        self.previews += 1
        key = self.storage.put_file(
            f"jobs/{self.ctx.job_id}/previews/{self.ctx.attempt}-{self.previews:05d}-{path.name}", path
        )
        with self.sessions() as session:
            artifact = Artifact(
                job_id=self.ctx.job_id,
                kind="preview",
                name=path.name,
                file_key=key,
                content_type="image/png",
                size_bytes=path.stat().st_size,
                sha256=file_sha256(path),
                owner_key=self.owner_key,
            )
            session.add(artifact)
            session.flush()
            self.preview_artifact_id = artifact.id
            self.preview_url = f"/v1/artifacts/{artifact.id}"
            add_event(
                session,
                self.ctx.job_id,
                "preview",
                {"artifact_id": artifact.id, "url": self.preview_url, "name": path.name},
            )
            session.commit()

    def on_checkpoint(self, path: Path, kimg: float, metrics: dict[str, float]) -> None:

        self._check_lost()
        key = self.storage.put_file(f"jobs/{self.ctx.job_id}/checkpoints/{path.name}", path)
        with self.sessions() as session:
            row = Checkpoint(
                job_id=self.ctx.job_id,
                kimg=kimg,
                file_key=key,
                sha256=file_sha256(path),
                size_bytes=path.stat().st_size,
                metrics=dict(metrics),
            )
            session.add(row)
            session.flush()
            self.checkpoint_ids.append(row.id)
            add_event(
                session,
                self.ctx.job_id,
                "checkpoint",
                {
                    "checkpoint_id": row.id,
                    "kimg": kimg,
                    "metrics": dict(metrics),
                    "size_bytes": row.size_bytes,
                },
            )
            session.commit()
            self._prune(session)

    def _prune(self, session: Session) -> None:

        rows = session.scalars(
            sa.select(Checkpoint)
            .where(Checkpoint.job_id == self.ctx.job_id)
            .order_by(Checkpoint.kimg.desc(), Checkpoint.created_at.desc())
        ).all()
        for old in rows[KEEP_CHECKPOINTS:]:
            self.storage.delete(old.file_key)
            session.delete(old)
        session.commit()

    def should_stop(self) -> bool:
        self._check_lost()
        now = self.clock()
        if not self.ctx.cancel_event.is_set() and now - self._last_cancel_poll >= CANCEL_POLL_SECONDS:
            self._last_cancel_poll = now
            try:
                with self.sessions() as session:
                    if jobs.cancel_requested(session, self.ctx.job_id):
                        self.ctx.signal_cancel()
            except sa.exc.SQLAlchemyError:
                # A database blip must not end a long run; the heartbeat relays the flag as well.
                log.warning("job %s: cancel poll failed", self.ctx.job_id, exc_info=True)
        return self.ctx.cancel_event.is_set()


# --- the handler ----------------------------------------------------------------------------------------


def training_root(ctx: JobContext) -> Path:
    settings = ctx.settings
    return (
        Path(settings.training_dir) if settings.training_dir is not None else settings.data_dir / "training"
    )


def training_options(
    spec: TrainingParams, *, data: Path, outdir: Path, resume: Path | None, cond: bool
) -> TrainOptions:
    """The library options a training job runs with (also what scripts/measure_finetune.py measures)."""
    return TrainOptions(
        data=data,
        outdir=outdir,
        cfg=spec.cfg or "auto",
        resume=resume,
        kimg=spec.kimg,
        batch=spec.batch,
        gamma=spec.gamma,
        aug=spec.aug,
        p=spec.p,
        target=spec.target,
        mirror=spec.mirror,
        cond=cond,
        freezed=spec.freezed,
        snap=spec.snap,
        tick=spec.tick,
        metrics=tuple(spec.metrics),
        seed=spec.seed,
        cbase=spec.cbase,
        cmax=spec.cmax,
        # A Celery prefork child is a daemon process and may not start DataLoader workers.
        workers=0,
        preview_images=spec.preview_images,
        progress_interval=PROGRESS_SECONDS,
        gpus=spec.gpus,
    )


def provenance_note(base: Model | None, dataset: Dataset, kimg: float) -> str:
    """The licence note of a trained model: what it came from, then the base's own note unchanged (an
    NVIDIA network's licence covers the weights fine-tuned from it)."""
    trained = f"on dataset {dataset.name} ({dataset.id}) for {kimg:.3f} kimg"
    if base is None:
        return f"Trained from scratch {trained}."
    return (
        f"Fine-tuned from {base.name} ({base.id}) {trained}; "
        f"base licence: {base.license_note or 'none recorded'}"
    )


def run_training(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    spec = TrainingParams.model_validate(params)
    sessions, storage = ctx.sessions, ctx.storage
    with sessions() as session:
        dataset = ctx.load_visible(session, Dataset, spec.dataset_id)
        model = None
        if spec.base_model_id is not None:
            model = ctx.load_visible(session, Model, spec.base_model_id)
        resume_row = last_checkpoint(session, ctx.job_id)
        session.expunge_all()

    job_dir = training_root(ctx) / ctx.job_id
    run_dir = job_dir / f"attempt-{ctx.attempt}"
    # A killed attempt leaves its folder (tens of MB of snapshots and previews); what a resume needs is
    # the stored Checkpoint row's file, never these, so earlier attempts' folders go now.
    if job_dir.exists():
        for old in job_dir.iterdir():
            shutil.rmtree(old, ignore_errors=True)
    run_dir.mkdir(parents=True)
    try:
        with ExitStack() as stack:
            data = _local(storage, dataset.file_key, stack)
            resume: Path | None = None
            if resume_row is not None:
                resume = _local(storage, resume_row.file_key, stack)
                log.info(
                    "job %s: attempt %d resumes from checkpoint at %.3f kimg",
                    ctx.job_id,
                    ctx.attempt,
                    resume_row.kimg,
                )
            elif model is not None:
                resume = _local(storage, model.file_key, stack)
            options = training_options(
                spec,
                data=data,
                outdir=run_dir,
                resume=resume,
                cond=bool(dataset.num_classes) and (model is None or model.c_dim > 0),
            )
            # Refuse a CUDA host with fewer devices than ranks now, before the first progress line.
            kind = device_kind(options)
            callback = JobTrainingCallback(
                ctx, resume_row.kimg if resume_row is not None else None, world_size=spec.gpus
            )
            callback.start(resume_row.kimg if resume_row is not None else 0.0, spec.kimg)
            log.info("job %s: training on %d rank(s), %s", ctx.job_id, spec.gpus, kind)
            # This process is rank 0 and keeps the callback; other ranks are its child processes.
            result = train_on_local_ranks(options, callback)
            if result.stopped:
                raise JobCanceled(
                    f"job {ctx.job_id} canceled at {result.kimg:.3f} kimg (final checkpoint kept)"
                )
            if result.model is None:
                raise GanError("training ended without exporting a model")
            model_id = _register_model(ctx, result.model, model, dataset, result.kimg)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    # The model and checkpoints are in storage: nothing of the job is left on the training disk.
    shutil.rmtree(job_dir, ignore_errors=True)
    with sessions() as session:
        kept = session.scalars(
            sa.select(Checkpoint.id).where(Checkpoint.job_id == ctx.job_id).order_by(Checkpoint.kimg)
        ).all()
    return {
        "model_id": model_id,
        "checkpoints": list(kept),
        "kimg": result.kimg,
        "world_size": result.world_size,
    }


def _register_model(
    ctx: JobContext, exported: Path, base: Model | None, dataset: Dataset, kimg: float
) -> str:
    """Store G_ema as our generator file and add its Model row (once, even if this step is re-run)."""
    source = f"training:{ctx.job_id}"
    license_note = provenance_note(base, dataset, kimg)
    with tempfile.TemporaryDirectory(prefix="stylegan-export-") as tmp:
        final = convert_network(
            exported, Path(tmp) / "model.safetensors", license_note=license_note, source=source
        )
        info = inspect_network(final)
        with ctx.sessions() as session:
            existing = session.scalars(sa.select(Model).where(Model.source == source)).first()
            if existing is not None:
                return existing.id
            key = ctx.storage.put_file(f"models/{info.sha256}.safetensors", final)
            name = (
                f"{base.name} fine-tuned on {dataset.name}"
                if base is not None
                else f"trained on {dataset.name}"
            )
            row = Model(
                name=name[:200],
                architecture=info.architecture,
                resolution=info.resolution,
                img_channels=int(info.config.get("img_channels", 3)),
                z_dim=info.z_dim,
                w_dim=info.w_dim,
                c_dim=info.c_dim,
                num_ws=info.num_ws,
                file_key=key,
                sha256=info.sha256,
                size_bytes=final.stat().st_size,
                format="ours",
                config=info.config,
                num_params=info.num_params,
                source=source,
                license_note=license_note,
                owner_key=ctx.owner_key,
                job_id=ctx.job_id,
            )
            session.add(row)
            session.commit()
            return row.id
