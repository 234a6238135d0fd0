"""`/v1/datasets`: thin routes; the use cases live in `api.services.datasets`.

The routes are plain `def`: FastAPI runs them in its threadpool, so preparing a small upload within
the request (decoding and resizing its images) never blocks the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Response, UploadFile, status
from fastapi.responses import JSONResponse

from api.deps import CeleryDep, OwnerDep, SessionDep, SettingsDep
from api.heavy import HeavyDep
from api.middleware import upload_route
from api.schemas.common import MAX_OFFSET, problem_responses
from api.schemas.datasets import DatasetList, DatasetOut, TransformName, dataset_out
from api.schemas.jobs import JobOut, job_out
from api.services import datasets as service
from worker.db.models import Dataset
from worker.wire import MAX_INT64, Name

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=problem_responses(401))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Upload images and prepare a training set",
    description=(
        "Send one zip (field `file`) or the field `file` repeated once per image. Each file is judged on "
        "its own: the answer lists every rejected file with its reason (not an image, truncated, unsafe "
        "path, symlink, decompression bomb, compression ratio, too small, ...). Images are squared "
        "(`transform`: center-crop, center-crop-wide or pad) and resized to `resolution`; without one, "
        "the largest power of two not above the median shorter side (at least 32, at most "
        'STYLEGAN_MAX_RESOLUTION). `labels` is optional JSON `{"file.png": class, ...}` or the official '
        '`{"labels": [[name, class], ...]}`; a `dataset.json` inside the zip is used otherwise. Uploads up '
        "to STYLEGAN_DATASET_INLINE_MAX_BYTES are prepared at once (201, the dataset); larger ones are "
        "queued as a `dataset_prepare` job (202, the job; its `result.dataset_id` names the dataset)."
    ),
    responses={
        201: {"model": DatasetOut, "description": "Prepared within the request."},
        202: {"model": JobOut, "description": "Large upload: a dataset_prepare job was queued."},
        **problem_responses(413, 422, 503),
    },
    response_model=None,
)
@upload_route(lambda settings: settings.max_upload_bytes)
def create_dataset(
    file: Annotated[list[UploadFile], File(description="One zip, or one image per repeated field.")],
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
    owner: OwnerDep,
    heavy: HeavyDep,
    resolution: Annotated[
        int | None, Form(le=MAX_INT64, description="Power of two; default from the images.")
    ] = None,
    transform: Annotated[TransformName, Form()] = "center-crop",
    name: Annotated[Name | None, Form(min_length=1, max_length=200)] = None,
    labels: Annotated[str | None, Form(description="JSON labels (optional).")] = None,
    webhook_url: Annotated[
        Name | None, Form(max_length=2000, description="Notified when a large upload's preparation job ends.")
    ] = None,
) -> JSONResponse:
    with heavy.slot("preparing this upload"):
        created = service.create_dataset(
            session,
            celery,
            settings,
            files=[(upload.filename or "", upload.file) for upload in file],
            name=name,
            resolution=resolution,
            transform=transform,
            labels=labels,
            owner_key=owner,
            webhook_url=webhook_url,
        )
    if isinstance(created, Dataset):
        body = dataset_out(created, settings.dataset_thumbnails).model_dump(mode="json")
        return JSONResponse(body, status_code=201, headers={"Location": f"/v1/datasets/{created.id}"})
    body = job_out(created).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers={"Location": f"/v1/jobs/{created.id}"})


@router.get("", summary="List datasets, newest first", responses=problem_responses(422))
def list_datasets(
    session: SessionDep,
    settings: SettingsDep,
    owner: OwnerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> DatasetList:
    rows, total = service.list_datasets(session, owner_key=owner, limit=limit, offset=offset)
    items = [dataset_out(row, settings.dataset_thumbnails) for row in rows]
    return DatasetList(items=items, total=total, limit=limit, offset=offset)


@router.get("/{dataset_id}", summary="Get a dataset", responses=problem_responses(404))
def get_dataset(dataset_id: str, session: SessionDep, settings: SettingsDep, owner: OwnerDep) -> DatasetOut:
    return dataset_out(service.get_dataset(session, dataset_id, owner_key=owner), settings.dataset_thumbnails)


@router.get(
    "/{dataset_id}/thumbnails/{n}.png",
    summary="A prepared image of the dataset",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The n-th prepared image."},
        **problem_responses(404),
    },
)
def get_thumbnail(
    dataset_id: str,
    n: Annotated[int, Path(ge=0, le=1000)],
    session: SessionDep,
    settings: SettingsDep,
    owner: OwnerDep,
) -> Response:
    png = service.thumbnail(session, settings, dataset_id, n, owner_key=owner)
    # A prepared dataset never changes: its images can be cached for good.
    return Response(
        png, media_type="image/png", headers={"Cache-Control": "private, max-age=31536000, immutable"}
    )


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a dataset",
    description="Refused (409) while a queued or running training job uses it.",
    responses=problem_responses(404, 409),
)
def delete_dataset(dataset_id: str, session: SessionDep, settings: SettingsDep, owner: OwnerDep) -> Response:
    service.delete_dataset(session, settings, dataset_id, owner_key=owner)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
