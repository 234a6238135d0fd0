"""Training job use cases behind `/v1/training-jobs`.

`submit_training` checks what only the database knows (the dataset and base model exist and are the
caller's or public; resolution and class count agree) before the job row is written, so a mismatch is
a 422 naming the field now, not a failed job minutes later. Writing the row and enqueueing are the
generic job path (`api.services.jobs.submit_job`).
"""

from __future__ import annotations

import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session

from api.errors import InvalidRequest, NotFound
from api.schemas.jobs import JobCreate
from api.schemas.training import TrainingJobCreate
from api.services import jobs as job_service
from gan.errors import ConfigError
from gan.training.presets import make_preset
from worker.db.models import Checkpoint, Dataset, Job, Model
from worker.db.queries import load_visible
from worker.events import last_event
from worker.settings import Settings


def _dataset(session: Session, dataset_id: str, owner_key: str | None) -> Dataset:
    row = load_visible(session, Dataset, dataset_id, owner_key)
    if row is None:
        raise InvalidRequest(f"body dataset_id: no dataset with id {dataset_id!r}")
    return row


def _model(session: Session, model_id: str, owner_key: str | None) -> Model:
    row = load_visible(session, Model, model_id, owner_key)
    if row is None:
        raise InvalidRequest(f"body base_model_id: no model with id {model_id!r}")
    return row


def check_request(session: Session, request: TrainingJobCreate, owner_key: str | None) -> None:
    try:
        request.check_choice()
    except ValueError as exc:
        raise InvalidRequest(f"body {exc}") from None
    dataset = _dataset(session, request.dataset_id, owner_key)
    if request.base_model_id is None:
        _check_ranks(request, dataset, None)
        return
    model = _model(session, request.base_model_id, owner_key)
    if model.resolution != dataset.resolution:
        raise InvalidRequest(
            f"body base_model_id: model {model.id} makes {model.resolution} px images but dataset "
            f"{dataset.id} is {dataset.resolution} px; prepare the dataset at {model.resolution}"
        )
    classes = dataset.num_classes or 0
    if model.c_dim != classes:
        raise InvalidRequest(
            f"body base_model_id: model {model.id} has {model.c_dim} classes (c_dim) but dataset "
            f"{dataset.id} has {classes}; fine-tuning needs the same class count"
        )
    if request.cfg is not None and request.cfg != "auto":
        # As the trainer: a StyleGAN3 model may pick its -t/-r preset; otherwise the preset's
        # architecture must be the model's.
        preset = make_preset(request.cfg, dataset.resolution)
        sg3 = request.cfg in ("stylegan3-t", "stylegan3-r") and model.architecture != "stylegan2"
        if preset.architecture != model.architecture and not sg3:
            raise InvalidRequest(
                f"body cfg: {request.cfg} trains {preset.architecture}, but base model {model.id} is "
                f"{model.architecture}; leave cfg out to fine-tune it as it is"
            )
    _check_ranks(request, dataset, model)


def _check_ranks(request: TrainingJobCreate, dataset: Dataset, model: Model | None) -> None:
    """The batch the run will use (the request's, or its preset's at this resolution) must split into
    equal shares for `gpus` ranks, each a whole number of D's minibatch-std groups: the checks of
    gan.training.options.split_batch, made here so that they are a 422 and not a failed job. A fine-tune
    builds D from the preset (stored models are generators only), and a StyleGAN3 base model picks the
    StyleGAN3 preset of its own kind, as gan.training.networks.setup_networks does."""
    gpus, name = request.gpus, str(request.cfg or "auto")
    field = "batch" if request.batch is not None else "gpus"
    try:
        preset = make_preset(name, dataset.resolution, gpus=gpus, batch=request.batch)
        if model is not None and model.architecture not in (preset.architecture, "stylegan2"):
            name = model.architecture
            preset = make_preset(name, dataset.resolution, gpus=gpus, batch=request.batch)
    except ConfigError as exc:
        raise InvalidRequest(f"body {field}: {exc}") from None
    source = (
        f"batch {preset.batch}" if request.batch is not None else f"the {name} preset's batch {preset.batch}"
    )
    if preset.batch % gpus:
        raise InvalidRequest(
            f"body {field}: {source} is not a multiple of gpus {gpus}; every rank takes an equal share"
        )
    per_rank, group = preset.batch // gpus, preset.mbstd_group
    if group and per_rank % group:
        raise InvalidRequest(
            f"body {field}: {source} over gpus {gpus} gives {per_rank} images per rank, not a multiple of "
            f"the discriminator's minibatch-std group of {group} ({name} preset); choose a batch of a "
            f"multiple of {gpus * group}"
        )


def submit_training(
    session: Session,
    celery: Celery,
    settings: Settings,
    *,
    request: TrainingJobCreate,
    owner_key: str | None,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    check_request(session, request, owner_key)
    return job_service.submit_job(
        session,
        celery,
        settings,
        request=JobCreate(kind="training", params=request.job_params(), webhook_url=request.webhook_url),
        owner_key=owner_key,
        idempotency_key=idempotency_key,
    )


def training_view(
    session: Session, job_id: str, *, owner_key: str | None
) -> tuple[Job, list[Checkpoint], str | None]:
    """The training job, its kept checkpoints (oldest first) and the URL of its latest preview."""
    job = job_service.get_job(session, job_id, owner_key=owner_key)
    if job.kind != "training":
        raise NotFound(f"job {job_id} is a {job.kind} job, not a training job; see /v1/jobs/{job_id}")
    checkpoints = session.scalars(
        sa.select(Checkpoint)
        .where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.kimg, Checkpoint.created_at)
    ).all()
    preview = last_event(session, job_id, "preview")
    url = preview.data.get("url") if preview is not None else None
    return job, list(checkpoints), url
