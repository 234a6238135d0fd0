"""`/v1/models/{id}/projections` and `/v1/projections/{id}`: thin routes over api.services.projections."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile, status

from api.deps import (
    CeleryDep,
    IdempotencyKey,
    OwnerDep,
    SessionDep,
    SettingsDep,
    accepted,
    accepted_responses,
)
from api.heavy import HeavyDep
from api.middleware import FORM_OVERHEAD_BYTES, upload_route
from api.schemas.common import problem_responses
from api.schemas.projections import ProjectionOut, projection_out
from api.services import projections as service
from gan.vocabulary import MAX_SEED
from worker.storage import make_storage
from worker.wire import MAX_INT64, Name

router = APIRouter(tags=["projections"], responses=problem_responses(401))


@router.post(
    "/models/{model_id}/projections",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Project an image into a model's latent space",
    description="Queues a job (kind `projection`) that finds the w whose image is closest to the uploaded "
    "one (StyleGAN2 section 5: Adam on the LPIPS distance, as NVIDIA's projector.py). The image is "
    "centre-cropped to a square and resized to the model. Poll `GET /v1/projections/{id}` (or the job); "
    "the result links the projected w (`projected_w.npz`), the reconstruction (`proj.png`), the target "
    "as the model saw it (`target.png`) and, with `save_video`, `proj.mp4`. A finished projection "
    "renders at `render_url` and mixes with seeds via `mix.png?row=w:{id}`.",
    responses={
        **accepted_responses(ProjectionOut, "The projection job"),
        **problem_responses(404, 413, 422, 429, 503),
    },
)
@upload_route(lambda settings: settings.projection_max_image_bytes + FORM_OVERHEAD_BYTES)
def create_projection(
    model_id: str,
    image: Annotated[UploadFile, File(description="The target: PNG, JPEG or WebP.")],
    response: Response,
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
    owner: OwnerDep,
    heavy: HeavyDep,
    space: Annotated[
        Literal["w", "w+"],
        Form(
            description="`w`: one w for every layer (official); `w+`: one per layer, closer but edits worse."
        ),
    ] = "w",
    steps: Annotated[
        int,
        Form(ge=1, le=MAX_INT64, description="Optimisation steps (at most STYLEGAN_PROJECTION_MAX_STEPS)."),
    ] = 1000,
    seed: Annotated[
        int, Form(ge=0, le=MAX_SEED, description="Seed of the exploration noise (official: 303).")
    ] = 303,
    save_video: Annotated[bool, Form(description="Also write proj.mp4, one frame per step.")] = False,
    class_idx: Annotated[
        int | None, Form(ge=0, le=MAX_INT64, description="Class, for a conditional model only.")
    ] = None,
    webhook_url: Annotated[
        Name | None,
        Form(
            min_length=1,
            max_length=2000,
            description="POSTed (HMAC-signed) when the job ends; see POST /v1/jobs.",
            examples=["https://example.com/hooks/stylegan"],
        ),
    ] = None,
    idempotency_key: IdempotencyKey = None,
) -> ProjectionOut:
    with heavy.slot("decoding this image"):
        job, created = service.create_projection(
            session,
            celery,
            settings,
            make_storage(settings),
            model_id=model_id,
            owner_key=owner,
            image=image.file,
            space=space,
            steps=steps,
            seed=seed,
            save_video=save_video,
            class_idx=class_idx,
            webhook_url=webhook_url,
            idempotency_key=idempotency_key,
        )
    accepted(response, created, f"/v1/projections/{job.id}")
    return projection_out(job)


@router.get("/projections/{projection_id}", summary="Get a projection", responses=problem_responses(404))
def get_projection(projection_id: str, session: SessionDep, owner: OwnerDep) -> ProjectionOut:
    return projection_out(service.get_projection(session, projection_id, owner_key=owner))
