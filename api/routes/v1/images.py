"""Sampling and style mixing over HTTP: synchronous images, and mix-grid and video jobs.

Thin routes: parse the query or body, call `api.services.sampling`, answer bytes or a job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status

from api.deps import (
    CeleryDep,
    IdempotencyKey,
    OwnerDep,
    SessionDep,
    SettingsDep,
    accepted,
    accepted_responses,
)
from api.errors import InvalidRequest
from api.schemas.common import problem_responses
from api.schemas.jobs import JobOut, job_out
from api.schemas.sampling import ImageQuery, MixGridCreate, MixQuery, ProjectionImageQuery, VideoCreate
from api.services import directions as edits
from api.services import sampling as service
from gan.vocabulary import MAX_SEED, ImageFormat

router = APIRouter(prefix="/models/{model_id}", tags=["sampling"], responses=problem_responses(401, 404))

_IMAGE_TYPES: dict[str, dict[str, object]] = {"image/png": {}, "image/jpeg": {}, "image/webp": {}}
_IMAGE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "content": _IMAGE_TYPES,
        "description": "The image: PNG (lossless), JPEG or WebP (quality 90). `X-Batch-Size` says how many "
        "requests shared its forward pass, `Server-Timing` where its time went (ms): `batch-wait` for "
        "companions and the pass before, `synthesis`, `encode`, `worker` (all of it in the worker), "
        "`broker` (the rest of `inference`, the API's wait for the worker).",
    },
    304: {"description": "`If-None-Match` named this image's ETag; nothing was computed."},
    **problem_responses(422, 429, 503),
}

ModelId = Annotated[
    str, Path(max_length=36, description="The model's id.", examples=["3f2c9f0e-7b1a-4c52-9d3e-2f7a1f0b8c11"])
]
Format = Annotated[ImageFormat, Path(description="png, jpg or webp.")]


@dataclass(frozen=True)
class ConditionalGet:
    """The validators of a cacheable image: its strong ETag and caching headers, and whether the
    client's copy is current (then a 304, before anything is queued)."""

    if_none_match: str | None
    cache_control: str

    def check(self, tag: str) -> tuple[dict[str, str], Response | None]:
        """The headers every answer for `tag` carries, and the 304 to answer instead, or None."""
        headers = {"ETag": tag, "Cache-Control": self.cache_control}
        if service.if_none_match(self.if_none_match, tag):
            return headers, Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
        return headers, None


def conditional_get(
    settings: SettingsDep,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=2000)] = None,
) -> ConditionalGet:
    return ConditionalGet(if_none_match, service.cache_control(settings))


ConditionalDep = Annotated[ConditionalGet, Depends(conditional_get)]


def server_timing(phases: dict[str, float]) -> dict[str, str]:
    """`Server-Timing: batch-wait;dur=3.1, synthesis;dur=40.2, ...` (milliseconds), or no header."""
    if not phases:
        return {}
    return {"Server-Timing": ", ".join(f"{name};dur={s * 1e3:.1f}" for name, s in phases.items())}


def _image(rendered: service.RenderedImage, headers: dict[str, str]) -> Response:
    return Response(
        rendered.data,
        media_type=rendered.content_type,
        headers={**headers, "X-Batch-Size": str(rendered.batch_size), **server_timing(rendered.phases)},
    )


@router.get(
    "/images/random.{format}",
    summary="An image from a random seed",
    description="Picks a seed, renders it, and says which: `X-Seed`, and a `Link` to the image's permanent "
    '(cacheable) URL with `rel="canonical"`. Never cached itself.',
    response_class=Response,
    responses=_IMAGE_RESPONSES,
)
def random_image(
    request: Request,
    model_id: ModelId,
    format: Format,
    query: Annotated[ImageQuery, Query()],
    session: SessionDep,
    settings: SettingsDep,
    owner: OwnerDep,
) -> Response:
    model = service.find_model(session, model_id, owner)
    params = edits.with_edits(request.app, session, model, service.image_params(query), query.edit, owner)
    service.check_model_params(model, params, settings)
    seed = service.random_seed()
    rendered = service.render(
        request.app, owner, service.sample_request(model, seed, params, format), session=session
    )
    canonical = f"/v1/models/{model.id}/images/{seed}.{format}?{params.query_string()}"
    return _image(
        rendered,
        {"X-Seed": str(seed), "Link": f'<{canonical}>; rel="canonical"', "Cache-Control": "no-store"},
    )


@router.get(
    "/images/w/{projection_id}.{format}",
    summary="The image of a projected w",
    description="Renders the w found by a projection job (`POST /v1/models/{id}/projections`) of this key.",
    response_class=Response,
    responses=_IMAGE_RESPONSES,
)
def projection_image(
    request: Request,
    model_id: ModelId,
    projection_id: Annotated[str, Path(max_length=36, description="The projection job's id.")],
    format: Format,
    query: Annotated[ProjectionImageQuery, Query()],
    session: SessionDep,
    settings: SettingsDep,
    owner: OwnerDep,
    conditional: ConditionalDep,
) -> Response:
    model = service.find_model(session, model_id, owner)
    params = edits.with_edits(request.app, session, model, service.image_params(query), query.edit, owner)
    service.check_model_params(model, params, settings)
    # The projection is looked up before any 304: `If-None-Match: *` must not answer "unchanged" for
    # another key's projection (or none), where the caller is owed the 404 of a missing one.
    w = service.projection_w(session, settings, projection_id, owner)
    headers, not_modified = conditional.check(service.etag(model, f"w:{projection_id}", params, format))
    if not_modified is not None:
        return not_modified
    rendered = service.render(
        request.app, owner, service.w_request(model, w, params, format), session=session
    )
    return _image(rendered, headers)


@router.get(
    "/images/{seed}.{format}",
    summary="The image of a seed",
    description="The pixels `stylegan generate` writes for this seed and these options. Deterministic, so "
    "cached for a year with a strong `ETag`; `If-None-Match` answers 304 without rendering.",
    response_class=Response,
    responses=_IMAGE_RESPONSES,
)
def seed_image(
    request: Request,
    model_id: ModelId,
    seed: Annotated[
        int, Path(ge=0, le=MAX_SEED, description="Any integer in [0, 2**32 - 1].", examples=[42])
    ],
    format: Format,
    query: Annotated[ImageQuery, Query()],
    session: SessionDep,
    settings: SettingsDep,
    owner: OwnerDep,
    conditional: ConditionalDep,
) -> Response:
    model = service.find_model(session, model_id, owner)
    params = edits.with_edits(request.app, session, model, service.image_params(query), query.edit, owner)
    service.check_model_params(model, params, settings)
    headers, not_modified = conditional.check(service.etag(model, f"seed:{seed}", params, format))
    if not_modified is not None:
        return not_modified
    rendered = service.render(
        request.app, owner, service.sample_request(model, seed, params, format), session=session
    )
    return _image(rendered, headers)


@router.get(
    "/mix.{format}",
    summary="Style mixing of two latents",
    description="The row's ws with the `styles` ws of the column, after truncation: the `{row}-{col}.png` "
    "that `stylegan mix` writes. `row` and `col` are seeds or `w:<projection id>`.",
    response_class=Response,
    responses=_IMAGE_RESPONSES,
)
def mix_image(
    request: Request,
    model_id: ModelId,
    format: Format,
    query: Annotated[MixQuery, Query()],
    session: SessionDep,
    settings: SettingsDep,
    owner: OwnerDep,
    conditional: ConditionalDep,
) -> Response:
    model = service.find_model(session, model_id, owner)
    params = edits.with_edits(request.app, session, model, service.image_params(query), query.edit, owner)
    service.check_model_params(model, params, settings)
    row, row_name = service.latent_source(session, settings, model, query.row, "row", owner)
    col, col_name = service.latent_source(session, settings, model, query.col, "col", owner)
    tag = service.etag(model, f"mix:{row_name}:{col_name}:{query.styles}", params, format)
    headers, not_modified = conditional.check(tag)
    if not_modified is not None:
        return not_modified
    rendered = service.render(
        request.app,
        owner,
        service.mix_request(model, row, col, query.styles, params, format),
        session=session,
    )
    return _image(rendered, headers)


_JOB_RESPONSES = {
    **accepted_responses(JobOut, "The job (its result links the artifact)"),
    **problem_responses(422, 503),
}


@router.post(
    "/mix-grids",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Queue a style-mixing grid",
    description="A job (kind `mix_grid`) whose artifact is the grid PNG `stylegan mix` writes as grid.png.",
    responses=_JOB_RESPONSES,
)
def create_mix_grid(
    model_id: ModelId,
    body: MixGridCreate,
    response: Response,
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
    owner: OwnerDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    model = service.find_model(session, model_id, owner)
    job, created = service.submit_mix_grid(
        session, celery, settings, model=model, body=body, owner_key=owner, idempotency_key=idempotency_key
    )
    accepted(response, created, f"/v1/jobs/{job.id}")
    return job_out(job)


@router.post(
    "/videos",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Queue a latent-walk video",
    description="A job (kind `video`) that walks through the seeds and encodes MP4, GIF or WebP; progress "
    "counts frames, and the artifact streams with Range from `GET /v1/artifacts/{id}`.",
    responses=_JOB_RESPONSES,
)
def create_video(
    request: Request,
    model_id: ModelId,
    body: VideoCreate,
    response: Response,
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
    owner: OwnerDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    model = service.find_model(session, model_id, owner)
    edits.resolve(request.app, session, model, body.edit, owner, where="body")
    edits.check_sweep(request.app, session, model, body.sweep, owner)
    if body.start_projection is not None:
        if body.space != "w":
            raise InvalidRequest("body start_projection: a walk from a projected w goes through w (space w)")
        # 404 (not this key's: as if it did not exist), or 409 unfinished; either names the field.
        w = service.projection_w(
            session, settings, body.start_projection, owner, field="body start_projection"
        )
        if tuple(w.shape) != (model.num_ws, model.w_dim):
            raise InvalidRequest(
                f"body start_projection: its w is {list(w.shape)}; this model needs [{model.num_ws}, {model.w_dim}]"
            )
    job, created = service.submit_video(
        session, celery, settings, model=model, body=body, owner_key=owner, idempotency_key=idempotency_key
    )
    accepted(response, created, f"/v1/jobs/{job.id}")
    return job_out(job)
