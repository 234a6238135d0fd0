"""Dataset use cases behind `/v1/datasets`.

An upload (one zip, or many image files) is staged as one zip in a temporary folder. Up to
`dataset_inline_max_bytes` it is prepared within the request (the route runs in FastAPI's threadpool);
above, it is moved to storage and a `dataset_prepare` job does the work (202). Either way the
preparation is `worker.tasks.dataset_prepare.prepare_and_register`, under the service's limits.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session

from api.errors import Conflict, InvalidRequest, NotAZipArchive, NotFound, ProblemResponse, problem
from api.quotas import enforce_storage_quota
from api.schemas.jobs import JobCreate
from api.services import jobs as job_service
from api.services.webhooks import check_webhook_url
from gan.training.dataset_prepare import NoUsableImagesError, archive_name
from worker.db.models import Dataset, Job
from worker.db.queries import load_visible, visible_to
from worker.job_kinds import DatasetTransform
from worker.settings import Settings
from worker.storage import make_storage
from worker.tasks.dataset_prepare import (
    is_zip,
    pack_images,
    prepare_and_register,
    stored_rejections,
    upload_key,
)
from worker.wire import check_name, load_json

logger = logging.getLogger(__name__)


class NothingUsable(InvalidRequest):
    """Every uploaded file was rejected: 422 with the first rejections listed (`rejected`, bounded as a
    stored report is) and their number (`rejected_count`)."""

    slug = "no-usable-images"

    def __init__(self, detail: str, rejected: list[dict[str, str]], rejected_count: int) -> None:
        super().__init__(detail)
        self.rejected = rejected
        self.rejected_count = rejected_count

    def to_response(self) -> ProblemResponse:
        return problem(
            self.status,
            self.title,
            self.detail,
            slug=self.slug,
            rejected=self.rejected,
            rejected_count=self.rejected_count,
        )


def parse_labels(text: str | None) -> dict[str, Any] | None:
    if text is None or not text.strip():
        return None
    try:
        labels = load_json(text)
    except ValueError as exc:  # malformed, nested too deep, or a non-finite number
        raise InvalidRequest(f"form field labels: not valid JSON: {exc}") from None
    if not isinstance(labels, dict):
        raise InvalidRequest(
            'form field labels: must be a JSON object {"name.png": class, ...} or {"labels": [[name, class], ...]}'
        )
    return labels


def check_resolution(resolution: int | None, settings: Settings) -> None:
    if resolution is None:
        return
    if resolution < 4 or resolution & (resolution - 1):
        raise InvalidRequest(f"form field resolution: must be a power of two >= 4 (got {resolution})")
    if resolution > settings.max_resolution:
        raise InvalidRequest(
            f"form field resolution: {resolution} is above this service's limit {settings.max_resolution} "
            "(STYLEGAN_MAX_RESOLUTION)"
        )


def _named_zip(name: str) -> bool:
    return Path(name or "").suffix.lower() == ".zip"


def _stage(files: list[tuple[str, BinaryIO]], folder: Path) -> Path:
    """One zip in `folder`: the uploaded zip itself, or the uploaded files packed into one.

    A file named `.zip`, or starting with a zip's signature, must be a readable zip: packed as an image
    it would only come back as "no usable images: not an image", which hides what went wrong.
    """
    source = folder / "source.zip"
    if len(files) == 1:
        name, stream = files[0]
        raw = folder / "upload.bin"
        with raw.open("wb") as out:
            while chunk := stream.read(1024 * 1024):
                out.write(chunk)
        if is_zip(raw) or _named_zip(name):
            if not zipfile.is_zipfile(raw):
                raise NotAZipArchive("form field file", Path(name or "upload").name)
            raw.rename(source)
            return source
        with raw.open("rb") as single:
            return pack_images([(name, single)], source)
    for name, _stream in files:
        if _named_zip(name):
            # Zips are not unpacked inside a multi-file upload; a zip among images would be judged as
            # one more (unreadable) image.
            raise InvalidRequest(
                f"form field file: {Path(name).name!r} is a .zip among {len(files)} files; upload a zip "
                "on its own, or the images themselves"
            )
    return pack_images(list(files), source)


def create_dataset(
    session: Session,
    celery: Celery,
    settings: Settings,
    *,
    files: list[tuple[str, BinaryIO]],
    name: str | None,
    resolution: int | None,
    transform: DatasetTransform,
    labels: str | None,
    owner_key: str | None,
    webhook_url: str | None = None,
) -> Dataset | Job:
    """A prepared Dataset (small upload), or the queued `dataset_prepare` job (large upload)."""
    if not files:
        raise InvalidRequest("form field file: upload one zip or one or more image files")
    check_resolution(resolution, settings)
    check_webhook_url(settings, webhook_url, field="form field webhook_url")
    label_map = parse_labels(labels)
    if name is None:
        first = Path(files[0][0] or "upload").name
        name = Path(first).stem if len(files) == 1 else f"{len(files)} images"
        name = name[:200] or "upload"
        try:
            check_name(name)  # the first file's name became the dataset's
        except ValueError as exc:
            raise InvalidRequest(f"form field file: the file name {exc}") from None
    storage = make_storage(settings)

    with tempfile.TemporaryDirectory(prefix="stylegan-upload-") as tmp:
        source = _stage(files, Path(tmp))
        try:
            if not zipfile.is_zipfile(source):
                raise InvalidRequest("form field file: the upload is neither a zip nor image files")
        except OSError as exc:
            raise InvalidRequest(f"form field file: unreadable upload ({exc})") from None
        size = source.stat().st_size
        enforce_storage_quota(session, settings, owner_key, size, field="form field file")
        if size > settings.dataset_inline_max_bytes:
            key = upload_key(uuid.uuid4().hex)
            storage.put_file(key, source)
            params = {
                "upload_key": key,
                "name": name,
                "resolution": resolution,
                "transform": transform,
                "labels": label_map,
            }
            try:
                job, _ = job_service.submit_job(
                    session,
                    celery,
                    settings,
                    request=JobCreate(kind="dataset_prepare", params=params, webhook_url=webhook_url),
                    owner_key=owner_key,
                    idempotency_key=None,
                )
                return job
            except Exception:
                storage.delete(key)
                raise
        try:
            row, _ = prepare_and_register(
                settings,
                session,
                storage,
                source,
                name=name,
                resolution=resolution,
                transform=transform,
                labels=label_map,
                owner_key=owner_key,
            )
        except NoUsableImagesError as exc:
            rejected = stored_rejections(exc.report.rejected)
            raise NothingUsable(f"form field file: {exc}", rejected, len(exc.report.rejected)) from None
    return row


def get_dataset(session: Session, dataset_id: str, *, owner_key: str | None) -> Dataset:
    row = load_visible(session, Dataset, dataset_id, owner_key)
    if row is None:
        raise NotFound(f"no dataset with id {dataset_id!r}")
    return row


def list_datasets(
    session: Session, *, owner_key: str | None, limit: int, offset: int
) -> tuple[list[Dataset], int]:
    filters = visible_to(Dataset, owner_key)
    total = session.scalar(sa.select(sa.func.count()).select_from(Dataset).where(*filters)) or 0
    rows = session.scalars(
        sa.select(Dataset)
        .where(*filters)
        .order_by(Dataset.created_at.desc(), Dataset.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), total


def active_training_jobs(session: Session, dataset_id: str) -> list[str]:
    """Queued or running training jobs reading this dataset (params are JSON: filtered here, not in SQL,
    so that SQLite and PostgreSQL agree)."""
    rows = session.execute(
        sa.select(Job.id, Job.params).where(Job.kind == "training", Job.state.in_(("queued", "running")))
    ).all()
    return [job_id for job_id, params in rows if (params or {}).get("dataset_id") == dataset_id]


def delete_dataset(session: Session, settings: Settings, dataset_id: str, *, owner_key: str | None) -> None:
    row = get_dataset(session, dataset_id, owner_key=owner_key)
    if owner_key is not None and row.owner_key != owner_key:
        raise NotFound(f"no dataset with id {dataset_id!r}")  # a public set is not this key's to delete
    users = active_training_jobs(session, dataset_id)
    if users:
        raise Conflict(
            f"dataset {dataset_id} is used by training job(s) {', '.join(users)}; cancel them or wait until they end"
        )
    key = row.file_key
    session.delete(row)
    session.commit()
    make_storage(settings).delete(key)


def thumbnail(
    session: Session, settings: Settings, dataset_id: str, n: int, *, owner_key: str | None
) -> bytes:
    """The n-th prepared image (PNG), read from the stored zip."""
    row = get_dataset(session, dataset_id, owner_key=owner_key)
    shown = min(settings.dataset_thumbnails, row.image_count)
    if not 0 <= n < shown:
        raise NotFound(f"dataset {dataset_id} has thumbnails 0..{shown - 1}, not {n}")
    with make_storage(settings).open(row.file_key) as stream, zipfile.ZipFile(stream) as zf:
        return zf.read(archive_name(n))
