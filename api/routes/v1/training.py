"""`/v1/training-jobs`: submit a fine-tune or a training run; read it with its preview and checkpoints.

The job itself is an ordinary job: `GET /v1/jobs/{id}` shows it too (its `progress_detail` holds kimg,
total_kimg, images_seen, fraction, eta_seconds, sec_per_kimg, augment_p, losses, metrics, preview_url and
tick), `POST /v1/jobs/{id}/cancel` stops it after the training step under way, with a final checkpoint, and
`GET /v1/jobs/{id}/events` streams its events.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.deps import (
    CeleryDep,
    IdempotencyKey,
    OwnerDep,
    SessionDep,
    SettingsDep,
    accepted,
    accepted_responses,
)
from api.schemas.common import problem_responses
from api.schemas.training import TrainingJobCreate, TrainingJobOut, training_job_out
from api.services import training as service

router = APIRouter(prefix="/training-jobs", tags=["training"], responses=problem_responses(401))


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Fine-tune a model or train one from scratch",
    description=(
        "Give `base_model_id` to fine-tune that model (its resolution and class count must match the "
        "dataset's), or `cfg` to train from scratch. Runs on the training queue; follow it with "
        "`GET /v1/training-jobs/{id}` or the event stream. When it succeeds, `result.model_id` is a new "
        "model ready to sample."
    ),
    responses={**accepted_responses(TrainingJobOut, "The training job"), **problem_responses(422, 503)},
)
def submit_training(
    body: TrainingJobCreate,
    response: Response,
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
    owner: OwnerDep,
    idempotency_key: IdempotencyKey = None,
) -> TrainingJobOut:
    job, created = service.submit_training(
        session, celery, settings, request=body, owner_key=owner, idempotency_key=idempotency_key
    )
    accepted(response, created, f"/v1/training-jobs/{job.id}")
    return training_job_out(*service.training_view(session, job.id, owner_key=owner))


@router.get(
    "/{job_id}",
    summary="Get a training job with its preview and checkpoints",
    responses=problem_responses(404),
)
def get_training_job(job_id: str, session: SessionDep, owner: OwnerDep) -> TrainingJobOut:
    return training_job_out(*service.training_view(session, job_id, owner_key=owner))
