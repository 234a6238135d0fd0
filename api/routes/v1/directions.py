"""Editing directions of a model, and edit grids: thin routes over `api.services.directions`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

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
from api.schemas.directions import (
    DirectionList,
    DirectionOut,
    DirectionsQuery,
    EditGridCreate,
    GanSpaceCreate,
    UserDirectionCreate,
)
from api.schemas.jobs import JobOut, job_out
from api.services import directions as service
from api.services.sampling import find_model

router = APIRouter(prefix="/models/{model_id}", tags=["editing"], responses=problem_responses(401, 404))

ModelId = Annotated[str, Path(max_length=36, description="The model's id.")]


@router.get(
    "/directions",
    summary="The model's editing directions",
    description="SeFa directions of a layer range (computed on the first request, well under a second, then "
    "stored), this key's GANSpace directions (after a `ganspace` job), or this key's own. Each `id` can be "
    "used as `edit=ID:STRENGTH` on every sampling route.",
    response_model=DirectionList,
    responses=problem_responses(422, 503),
)
def get_directions(
    request: Request,
    model_id: ModelId,
    query: Annotated[DirectionsQuery, Query()],
    session: SessionDep,
    owner: OwnerDep,
) -> DirectionList:
    model = find_model(session, model_id, owner)
    items = service.directions(request.app, session, model, query.method, query.layers, query.k, owner)
    return DirectionList(items=items)


_CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/GanSpaceCreate"},
                        {"$ref": "#/components/schemas/UserDirectionCreate"},
                    ]
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name", "file"],
                    "properties": {
                        "name": {"type": "string", "maxLength": 48},
                        "layers": {"type": "string", "maxLength": 20, "default": "all"},
                        "file": {"type": "string", "format": "binary", "description": "A .npy vector."},
                    },
                }
            },
        },
    }
}


@router.post(
    "/directions",
    summary="Start GANSpace, or store your own direction",
    description='JSON `{"method": "ganspace", "samples": 100000, "k": 20}` queues a `ganspace` job (202, '
    'progress in samples mapped). JSON `{"method": "user", "name": "smile", "vector": [...]}`, or a '
    "multipart form with `name`, `file` (a .npy of w_dim numbers, e.g. an InterFaceGAN boundary) and "
    "optional `layers`, stores a direction of this key (201); the same name again replaces it.",
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"model": DirectionOut, "description": "The stored direction."},
        **accepted_responses(JobOut, "The GANSpace job"),
        **problem_responses(413, 415, 422, 503),
    },
    openapi_extra=_CREATE_BODY,
)
async def create_direction(
    request: Request,
    model_id: ModelId,
    response: Response,
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
    owner: OwnerDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    body = await _read_create(request)
    model = find_model(session, model_id, owner)
    if isinstance(body, GanSpaceCreate):
        job, created = service.submit_ganspace(
            session,
            celery,
            settings,
            model=model,
            body=body,
            owner_key=owner,
            idempotency_key=idempotency_key,
        )
        accepted(response, created, f"/v1/jobs/{job.id}")
        return job_out(job)
    return service.store_user_direction(session, model, body, owner)


async def _read_create(request: Request) -> GanSpaceCreate | UserDirectionCreate:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=4)
        except HTTPException as exc:  # starlette's own refusal of the form (too many parts, malformed)
            raise InvalidRequest(f"body: {exc.detail}") from None
        upload, name, layers = form.get("file"), form.get("name"), form.get("layers") or "all"
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("body file: required, a .npy of the direction's w_dim numbers")
        if not isinstance(name, str) or not isinstance(layers, str):
            raise InvalidRequest("body name: required, the direction's name")
        vector = service.npy_vector(await upload.read(service.MAX_NPY_BYTES + 1))
        fields: Any = {"method": "user", "name": name, "layers": layers, "vector": vector}
        return _validate(fields)
    if content_type != "application/json":
        raise InvalidRequest(
            "body: send application/json (ganspace or user) or multipart/form-data (a .npy file)"
        )
    try:
        fields = await request.json()
    except ValueError:
        raise InvalidRequest("body: not valid JSON") from None
    return _validate(fields)


def _validate(fields: Any) -> GanSpaceCreate | UserDirectionCreate:
    if not isinstance(fields, dict) or fields.get("method") not in ("ganspace", "user"):
        raise InvalidRequest('body method: must be "ganspace" or "user"')
    model = GanSpaceCreate if fields["method"] == "ganspace" else UserDirectionCreate
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidRequest(f"body {where}: {first['msg']}") from None


@router.delete(
    "/directions/{direction_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a GANSpace or user direction of this key",
    response_class=Response,
)
def delete_direction(
    model_id: ModelId,
    direction_id: Annotated[str, Path(max_length=100)],
    session: SessionDep,
    owner: OwnerDep,
) -> Response:
    model = find_model(session, model_id, owner)
    service.remove_direction(session, model, direction_id, owner)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/edit-grids",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Queue an edit grid",
    description="A job (kind `edit_grid`) rendering seeds (rows) x strengths (columns) along one direction "
    "into one PNG artifact.",
    responses={
        **accepted_responses(JobOut, "The job (its result links the artifact)"),
        **problem_responses(422, 503),
    },
)
def create_edit_grid(
    request: Request,
    model_id: ModelId,
    body: EditGridCreate,
    response: Response,
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
    owner: OwnerDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    model = find_model(session, model_id, owner)
    job, created = service.submit_edit_grid(
        request.app,
        session,
        celery,
        settings,
        model=model,
        body=body,
        owner_key=owner,
        idempotency_key=idempotency_key,
    )
    accepted(response, created, f"/v1/jobs/{job.id}")
    return job_out(job)
