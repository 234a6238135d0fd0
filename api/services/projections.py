"""Projection use cases: queue a projection of an uploaded image, read one back, load its w.

A projection is a job of kind `projection` (worker/tasks/projection.py) on the inference queue; its id
is the job id. The service checks the model and the image here, so a bad upload is a 4xx naming
`image` and never a failed job: the image must be PNG, JPEG or WebP, at most
`projection_max_image_bytes` and `projection_max_image_pixels`, and decode completely. The upload is
stored once by its sha256 under `uploads/projections/` and the job carries only that key.
"""

from __future__ import annotations

import hashlib
import io
from typing import IO, Literal

import numpy as np
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session

from api.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from api.quotas import enforce_job_quota, enforce_storage_quota
from api.schemas.jobs import JobCreate
from api.services import jobs as job_service
from api.services.webhooks import check_webhook_url
from worker.db.models import Artifact, Job, Model
from worker.job_kinds import PROJECTION_UPLOAD_PREFIX
from worker.settings import Settings
from worker.storage import Storage
from worker.tasks.projection import W_ARTIFACT

KIND = "projection"
# PIL format name -> file extension of the stored upload.
IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


def visible_model(session: Session, model_id: str, owner_key: str | None) -> Model:
    """The model if this key may use it (its own, or a public one such as the demo); else 404."""
    model = session.get(Model, model_id)
    if model is None or (owner_key is not None and model.owner_key not in (None, owner_key)):
        raise NotFound(f"no model with id {model_id!r}")
    return model


def read_target_image(upload: IO[bytes], settings: Settings) -> tuple[bytes, str]:
    """The upload's bytes and file extension, once it proved to be a whole PNG/JPEG/WebP image within
    the limits; 413/422 naming `image` otherwise."""
    import PIL.Image

    limit = settings.projection_max_image_bytes
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"image: more than {limit} bytes (STYLEGAN_PROJECTION_MAX_IMAGE_BYTES)")
    if not data:
        raise InvalidRequest("image: the file is empty")
    max_pixels = settings.projection_max_image_pixels
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            # The header gives the size: refuse a decompression bomb before decoding any pixel.
            width, height = image.size
            if image.format not in IMAGE_FORMATS:
                raise InvalidRequest(f"image: must be PNG, JPEG or WebP, got {image.format}")
            if width * height > max_pixels:
                raise InvalidRequest(
                    f"image: {width}x{height} is more than {max_pixels} pixels "
                    "(STYLEGAN_PROJECTION_MAX_IMAGE_PIXELS)"
                )
            image.load()  # a truncated or corrupt file fails here, not in the worker
            extension = IMAGE_FORMATS[image.format]
    except InvalidRequest:
        raise
    except (
        PIL.UnidentifiedImageError,
        PIL.Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        raise InvalidRequest(f"image: not a readable PNG, JPEG or WebP image ({exc})") from None
    return data, extension


def create_projection(
    session: Session,
    celery: Celery,
    settings: Settings,
    storage: Storage,
    *,
    model_id: str,
    owner_key: str | None,
    image: IO[bytes],
    space: Literal["w", "w+"],
    steps: int,
    seed: int,
    save_video: bool,
    class_idx: int | None,
    webhook_url: str | None,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Queue a projection; returns the job and whether it is new (False: an Idempotency-Key replay)."""
    model = visible_model(session, model_id, owner_key)
    if steps > settings.projection_max_steps:
        raise InvalidRequest(
            f"body steps: at most {settings.projection_max_steps} (STYLEGAN_PROJECTION_MAX_STEPS), got {steps}"
        )
    if model.c_dim > 0 and class_idx is None:
        raise InvalidRequest(
            f"body class_idx: this model is conditional ({model.c_dim} classes); give a class"
        )
    if model.c_dim == 0 and class_idx is not None:
        raise InvalidRequest(f"body class_idx: this model is unconditional, got {class_idx}")
    if class_idx is not None and class_idx >= model.c_dim:
        raise InvalidRequest(f"body class_idx: must be below {model.c_dim}, got {class_idx}")
    # Cheap refusals first, before the upload is read and stored (submit_job repeats them).
    check_webhook_url(settings, webhook_url)
    enforce_job_quota(session, settings, owner_key)
    data, extension = read_target_image(image, settings)
    enforce_storage_quota(session, settings, owner_key, len(data), field="image")

    key = f"{PROJECTION_UPLOAD_PREFIX}/{hashlib.sha256(data).hexdigest()}.{extension}"
    if not storage.exists(key):
        storage.put_bytes(key, data)
    params = {
        "model_id": model.id,
        "image_key": key,
        "space": space,
        "steps": steps,
        "seed": seed,
        "save_video": save_video,
        "class_idx": class_idx,
    }
    request = JobCreate(kind=KIND, params=params, webhook_url=webhook_url)
    # Queue depth, the job quota, the webhook URL check, idempotency and enqueue-after-commit all live
    # in the jobs service; a projection is one more kind of job.
    return job_service.submit_job(
        session, celery, settings, request=request, owner_key=owner_key, idempotency_key=idempotency_key
    )


def get_projection(session: Session, projection_id: str, *, owner_key: str | None) -> Job:
    """The projection's job row; 404 when absent, another key's, or not a projection."""
    job = session.get(Job, projection_id, populate_existing=True)
    if job is None or job.kind != KIND or (owner_key is not None and job.owner_key != owner_key):
        raise NotFound(f"no projection with id {projection_id!r}")
    return job


def load_projection_w(
    session: Session, storage: Storage, projection_id: str, owner_key: str | None
) -> np.ndarray:
    """The projected w of a finished projection: float32 [1, num_ws, w_dim].

    404 when the projection is not this key's; 409 while it has not succeeded. The sampling routes
    (`images/w/{projection_id}.png`, `mix.png?row=w:{id}`) call this and check the shape against their
    model (`projection_model_id` says which model it was made for).
    """
    job = get_projection(session, projection_id, owner_key=owner_key)
    if job.state != "succeeded":
        raise Conflict(f"projection {projection_id} is {job.state}; its w exists once it has succeeded")
    name = W_ARTIFACT[0]
    artifact = session.scalars(
        sa.select(Artifact).where(Artifact.job_id == job.id, Artifact.name == name)
    ).one_or_none()
    if artifact is None:
        raise NotFound(f"projection {projection_id} has no {name} (deleted?)")
    with storage.open(artifact.file_key) as f:
        data = f.read()
    # allow_pickle=False: the file is ours, but an npz must never be a way to run code.
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        w = np.asarray(npz["w"], dtype=np.float32)
    if w.ndim != 3 or w.shape[0] != 1:
        raise Conflict(
            f"projection {projection_id}: stored w has shape {list(w.shape)}, expected [1, num_ws, w_dim]"
        )
    return w


def projection_model_id(session: Session, projection_id: str, owner_key: str | None) -> str:
    """The model a projection was made for (its w fits that model's num_ws and w_dim)."""
    model_id: str = get_projection(session, projection_id, owner_key=owner_key).params["model_id"]
    return model_id
