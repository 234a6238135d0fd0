"""The `dataset_prepare` job, and the preparation both it and `POST /v1/datasets` run.

An upload is staged as one zip (the user's zip, or the uploaded images packed into one, names kept so
that hostile ones are judged by the same code), prepared by `gan.training.dataset_prepare` under the
service's limits, stored at `datasets/<id>/dataset.zip` and registered as a Dataset row. Small uploads
are prepared within the request; large ones go through this job on the inference queue: preparing is
decoding and resizing (seconds to minutes, one core), which must not wait hours behind a training run,
and the inference worker's thread pool keeps serving samples beside it.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import PIL.Image
import sqlalchemy as sa
from sqlalchemy.orm import Session

from gan.errors import ConfigError
from gan.io.files import file_sha256
from gan.training.dataset_prepare import (
    NoUsableImagesError,
    PrepareLimits,
    PrepareReport,
    Rejection,
    prepare_dataset,
    rejection_list,
)
from worker.db.models import Dataset, new_id
from worker.job_kinds import DatasetPrepareParams, DatasetTransform
from worker.settings import Settings
from worker.storage import Storage
from worker.tasks.context import JobCanceled, JobContext

# The smallest resolution the default picks: below it a GAN learns little worth sampling.
MIN_DEFAULT_RESOLUTION = 32
ProgressFn = Callable[[int, int], None]
# A rejection report is stored in the dataset row, sent with every GET /v1/datasets and in a failed
# job's progress: the first REPORT_MAX_ENTRIES rejections, names and details cut to REPORT_MAX_CHARS,
# beside the full count (450 rejected files with 64 KB names were 28 MB per listing).
REPORT_MAX_ENTRIES = 100
REPORT_MAX_CHARS = 256


def stored_rejections(rejected: Sequence[Rejection | dict[str, Any]]) -> list[dict[str, str]]:
    """The bounded report (see REPORT_MAX_ENTRIES), from the library's rejections or stored dicts."""
    first = [
        r
        if isinstance(r, Rejection)
        else Rejection(str(r["name"]), str(r["reason"]), str(r.get("detail", "")))
        for r in rejected[:REPORT_MAX_ENTRIES]
    ]
    return rejection_list(first, REPORT_MAX_ENTRIES, REPORT_MAX_CHARS)


def report_bytes(rejected: list[dict[str, str]]) -> int:
    """What a stored report costs in the database: counted in the owner's storage quota with the zip."""
    return len(json.dumps(rejected).encode())


def dataset_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}/dataset.zip"


def upload_key(token: str) -> str:
    return f"uploads/{token}/source.zip"


def prepare_limits(settings: Settings) -> PrepareLimits:
    return PrepareLimits(
        max_files=settings.dataset_max_files,
        max_total_bytes=settings.dataset_max_uncompressed_bytes,
        max_file_bytes=settings.dataset_max_file_bytes,
        max_compression_ratio=settings.dataset_max_compression_ratio,
        max_image_pixels=settings.dataset_max_image_pixels,
    )


def pack_images(files: list[tuple[str, io.BufferedIOBase | Any]], dest: Path) -> Path:
    """Pack uploaded files into one stored (uncompressed) zip under the names they were sent with, so
    that a hostile name (`../x.png`, `/etc/x`) reaches prepare_dataset's checks and is reported."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as out:
        for index, (name, stream) in enumerate(files):
            info = zipfile.ZipInfo(name or f"file{index:05d}", date_time=(1980, 1, 1, 0, 0, 0))
            with out.open(info, "w", force_zip64=True) as entry:
                shutil.copyfileobj(stream, entry, 1024 * 1024)
    return dest


def is_zip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")  # a zip, or an empty one


def default_resolution(source: Path, limits: PrepareLimits, max_resolution: int) -> int:
    """The largest power of two <= the median shorter side of the readable images, within
    [MIN_DEFAULT_RESOLUTION, max_resolution]: the prepared images are then downscaled, never blown up,
    for at least half of the set. Only image headers are read; entries the preparation would refuse
    (unsafe names, bombs, oversized) are skipped here too."""
    sides: list[int] = []
    with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(source) as zf:
        for info in zf.infolist()[: limits.max_files]:
            if info.is_dir() or info.file_size > limits.max_file_bytes:
                continue
            if info.file_size > limits.max_compression_ratio * max(info.compress_size, 1):
                continue
            if info.filename.startswith(("/", "\\")) or ".." in info.filename.replace("\\", "/").split("/"):
                continue
            try:
                with zf.open(info) as stream, PIL.Image.open(stream) as img:
                    w, h = img.size
            except Exception:  # anything Pillow cannot open is judged (and reported) by the preparation
                continue
            if 0 < w * h <= limits.max_image_pixels:
                sides.append(min(w, h))
    if not sides:
        return min(256, max_resolution)
    median = int(statistics.median(sides))
    resolution = MIN_DEFAULT_RESOLUTION
    while resolution * 2 <= min(median, max_resolution):
        resolution *= 2
    return min(resolution, max_resolution)


def label_dim(prepared: Path) -> tuple[bool, int | None]:
    """(has labels, the c_dim a model trained on it has): classes for indices, the length for vectors."""
    with zipfile.ZipFile(prepared) as zf:
        meta = json.loads(zf.read("dataset.json"))
    labels = meta.get("labels")
    if not labels:
        return False, None
    values = [value for _, value in labels]
    if isinstance(values[0], list):
        return True, len(values[0])
    return True, max(int(v) for v in values) + 1


def prepare_and_register(
    settings: Settings,
    session: Session,
    storage: Storage,
    source: Path,
    *,
    name: str,
    resolution: int | None,
    transform: DatasetTransform,
    labels: dict[str, Any] | None,
    owner_key: str | None,
    job_id: str | None = None,
    progress: ProgressFn | None = None,
) -> tuple[Dataset, PrepareReport]:
    """Prepare the staged zip `source`, store the result and commit its Dataset row.

    Raises `gan.training.dataset_prepare.NoUsableImagesError` (a GanError, with the report) when every
    file was rejected, and GanError subclasses for bad labels or options; nothing is stored then.
    """
    limits = prepare_limits(settings)
    if resolution is None:
        resolution = default_resolution(source, limits, settings.max_resolution)
    elif resolution > settings.max_resolution:
        raise ConfigError(f"resolution {resolution} is above this service's limit {settings.max_resolution}")
    dataset_id = new_id()
    with tempfile.TemporaryDirectory(prefix="stylegan-dataset-") as tmp:
        dest = Path(tmp) / "dataset.zip"
        report = prepare_dataset(
            source, dest, resolution, transform=transform, labels=labels, progress=progress, limits=limits
        )
        has_labels, num_classes = label_dim(dest)
        rejected = stored_rejections(report.rejected)
        key = storage.put_file(dataset_key(dataset_id), dest)
        row = Dataset(
            id=dataset_id,
            name=name,
            file_key=key,
            sha256=file_sha256(dest),
            size_bytes=dest.stat().st_size + report_bytes(rejected),
            image_count=report.accepted,
            resolution=resolution,
            has_labels=has_labels,
            num_classes=num_classes,
            rejected=rejected,
            rejected_count=len(report.rejected),
            owner_key=owner_key,
            job_id=job_id,
        )
    session.add(row)
    try:
        session.commit()
    except Exception:
        session.rollback()
        storage.delete(key)
        raise
    return row, report


@contextlib.contextmanager
def local_copy(storage: Storage, key: str) -> Iterator[Path]:
    """A local path to a stored file: in place for local storage, else a temporary copy."""
    path = storage.local_path(key)
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="stylegan-fetch-") as tmp:
        local = Path(tmp) / Path(key).name
        with storage.open(key) as src, local.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        yield local


def run_dataset_prepare(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Prepare a staged upload; result {dataset_id, image_count, rejected}. The upload is deleted once
    the outcome is final (a dataset, or a set with nothing usable), and kept for a retry otherwise."""
    spec = DatasetPrepareParams.model_validate(params)
    storage = ctx.storage
    last_report = [0.0]

    def progress(done: int, total: int) -> None:
        # One database write per second at most: a 100k-file set must not become 100k UPDATEs.
        now = time.monotonic()
        if done == total or now - last_report[0] >= 1.0:
            last_report[0] = now
            ctx.report(0.99 * done / max(total, 1), {"files_done": done, "files_total": total})

    with ctx.sessions() as session:
        existing = session.scalars(sa.select(Dataset).where(Dataset.job_id == ctx.job_id)).first()
        if existing is not None:  # an earlier attempt registered it and was lost before finishing
            return {
                "dataset_id": existing.id,
                "image_count": existing.image_count,
                "rejected": existing.rejected_count,
            }
        ctx.report(0.0, {"files_done": 0})
        try:
            with local_copy(storage, spec.upload_key) as source:
                row, report = prepare_and_register(
                    ctx.settings,
                    session,
                    storage,
                    source,
                    name=spec.name,
                    resolution=spec.resolution,
                    transform=spec.transform,
                    labels=spec.labels,
                    owner_key=ctx.owner_key,
                    job_id=ctx.job_id,
                    progress=progress,
                )
        except JobCanceled:
            storage.delete(spec.upload_key)
            raise
        except NoUsableImagesError as exc:
            rejected = stored_rejections(exc.report.rejected)
            ctx.report(1.0, {"rejected": rejected, "rejected_count": len(exc.report.rejected)})
            storage.delete(spec.upload_key)
            raise
    storage.delete(spec.upload_key)
    return {"dataset_id": row.id, "image_count": row.image_count, "rejected": len(report.rejected)}
