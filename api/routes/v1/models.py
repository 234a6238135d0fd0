"""`/v1/models` and `/v1/catalog`: thin routes; the use cases live in `api.services.models`."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import CeleryDep, IdempotencyKey, OwnerDep, SessionDep, SettingsDep, accepted, get_owner
from api.errors import InvalidRequest, describe_validation_errors
from api.heavy import HeavyDep
from api.middleware import upload_route
from api.schemas.common import MAX_OFFSET, problem_responses
from api.schemas.jobs import JobOut, job_out
from api.schemas.models import (
    CatalogList,
    ModelImportRequest,
    ModelList,
    ModelOut,
    catalog_entry_out,
    model_out,
)
from api.services import models as service
from worker.model_import import scratch_dir

router = APIRouter(tags=["models"], responses=problem_responses(401))

_UPLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "An official StyleGAN2-ADA/StyleGAN3 .pkl, an old TensorFlow StyleGAN2 .pkl, "
            "or one of our .safetensors generator files.",
        },
        "name": {"type": "string", "maxLength": 200, "description": "Defaults to the file name."},
        "license_note": {
            "type": "string",
            "maxLength": 2000,
            "description": "The weights' licence, when not NVIDIA's non-commercial one (for pickles) "
            "or the note in the file (for ours).",
        },
    },
}
_CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _UPLOAD_SCHEMA},
            "application/json": {
                "schema": ModelImportRequest.model_json_schema(),
                "examples": {
                    "catalog": {"value": {"catalog": "stylegan3-r-afhqv2-512x512"}},
                    "url": {"value": {"url": "https://example.org/networks/my-network.pkl", "name": "mine"}},
                },
            },
        },
    }
}


@router.post(
    "/models",
    status_code=status.HTTP_201_CREATED,
    summary="Upload a network file, or import one from the catalogue or a URL",
    description="multipart/form-data with a `file`: the file is read in a sandboxed process and stored "
    "in our format (201), or, if this key already uploaded the same bytes, the existing model is "
    "returned (200). A refused file (hostile pickle, damaged, over a memory or time limit) is a 422 "
    'naming why, and nothing is kept. JSON `{"catalog": name}` or `{"url": ...}` queues a '
    "`model_import` job (202); poll it, its `result.model_id` names the model.",
    openapi_extra=_CREATE_BODY,
    response_model=ModelOut,
    responses={
        200: {"model": ModelOut, "description": "This key already has a model for these exact bytes."},
        201: {"model": ModelOut, "description": "The uploaded file was imported."},
        202: {"model": JobOut, "description": "The import job was queued (JSON body)."},
        **problem_responses(400, 413, 415, 422, 503),
    },
)
@upload_route(lambda settings: settings.max_upload_bytes)
async def create_model(
    request: Request,
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
    owner: OwnerDep,
    heavy: HeavyDep,
    content_type: Annotated[str, Header(alias="Content-Type")] = "",
    idempotency_key: IdempotencyKey = None,
) -> Response:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        upload = await service.receive_upload(
            request.stream(), content_type, scratch_dir(settings), settings.max_upload_bytes
        )
        with heavy.slot("reading this network file"):
            row, created = await run_in_threadpool(
                service.create_from_upload, session, settings, upload, owner_key=owner
            )
        body = model_out(row, demo=service.model_is_demo(row))
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return JSONResponse(
            body.model_dump(mode="json"), status_code=code, headers={"Location": body.links.self}
        )
    if media_type == "application/json":
        import_request = _parse_import_request(await request.body())
        job, created = await run_in_threadpool(
            lambda: service.start_import(
                session,
                celery,
                settings,
                request=import_request,
                owner_key=owner,
                idempotency_key=idempotency_key,
            )
        )
        answer = JSONResponse(job_out(job).model_dump(mode="json"))
        accepted(answer, created, f"/v1/jobs/{job.id}")
        return answer
    raise service.UnsupportedMediaType(
        f"header Content-Type: expected multipart/form-data (upload a file) or application/json "
        f"(catalogue or URL import), got {media_type or 'none'!r}"
    )


def _parse_import_request(raw: bytes) -> ModelImportRequest:
    try:
        return ModelImportRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        detail, _ = describe_validation_errors(errors)
        raise InvalidRequest(detail) from None
    except json.JSONDecodeError as exc:  # pragma: no cover - pydantic reports JSON errors itself
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None


@router.get(
    "/models", summary="List the models this key can use, newest first", responses=problem_responses(422)
)
def list_models(
    session: SessionDep,
    owner: OwnerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ModelList:
    rows, total = service.list_models(session, owner_key=owner, limit=limit, offset=offset)
    items = [model_out(row, demo=service.model_is_demo(row)) for row in rows]
    return ModelList(items=items, total=total, limit=limit, offset=offset)


@router.get("/models/{model_id}", summary="Get a model", responses=problem_responses(404))
def get_model(model_id: str, session: SessionDep, owner: OwnerDep) -> ModelOut:
    row = service.get_model(session, model_id, owner_key=owner)
    return model_out(row, demo=service.model_is_demo(row))


@router.delete(
    "/models/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a model",
    description="Removes the model; its stored file goes too unless another key's model shares it. "
    "The bundled demo model is shared by every key and cannot be deleted (403).",
    responses=problem_responses(403, 404),
)
def delete_model(model_id: str, session: SessionDep, settings: SettingsDep, owner: OwnerDep) -> Response:
    service.delete_model(session, settings, model_id, owner_key=owner)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/catalog",
    summary="Official pretrained networks that can be imported by name",
    description='Import one with `POST /v1/models {"catalog": name}`. `sha256` is null where the '
    "publisher gives no checksum. NVIDIA's networks are under a non-commercial licence.",
    tags=["catalog"],
    dependencies=[Depends(get_owner)],
)
def list_catalog(settings: SettingsDep) -> CatalogList:
    return CatalogList(items=[catalog_entry_out(entry) for entry in service.list_catalog(settings)])
