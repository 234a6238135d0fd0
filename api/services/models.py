"""Model use cases behind `/v1/models` and `/v1/catalog`.

An upload is received as a stream: the multipart body is parsed chunk by chunk (python-multipart's
push parser), the `file` part goes straight to a scratch file under the data dir while its sha256 and
size are computed, and the size limit is enforced as the bytes arrive, so the server never holds an
upload in memory and never reads a file twice to checksum it. The scratch file is removed whatever
happens. Then `worker.model_import.register_model` answers with the owner's existing model for the
same bytes, or imports the file in its sandboxed child and registers it.

A URL or catalogue import is a `model_import` job (202): the URL is checked here already (scheme,
public address) so an obviously refused URL is a 422 naming it, not a failed job later.

Visibility: a key sees its own models and the demo model; with auth off, everything.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import sqlalchemy as sa
from celery import Celery
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError, Forbidden, InvalidRequest, NotFound, PayloadTooLarge, naming
from api.quotas import enforce_storage_quota
from api.schemas.jobs import JobCreate
from api.schemas.models import ModelImportRequest
from api.services import jobs as jobs_service
from worker.catalog import BUNDLED_CATALOG, CatalogEntry, catalog_entry, load_catalog
from worker.db.models import Job, Model
from worker.db.queries import load_visible, visible_to
from worker.demo_model import is_demo
from worker.job_kinds import MAX_LICENSE_NOTE_LENGTH, MAX_NAME_LENGTH
from worker.model_import import (
    ImportLimits,
    default_name,
    delete_model_file_if_unused,
    find_model,
    register_model,
    scratch_dir,
    scratch_file,
)
from worker.net import check_public_url
from worker.settings import Settings
from worker.storage import make_storage
from worker.wire import check_name, check_text

UPLOAD_FIELDS = ("file", "name", "license_note")
# Text fields are short; a larger one is a mistake (or an attempt to make us buffer it).
_TEXT_FIELD_LIMITS = {"name": MAX_NAME_LENGTH * 4, "license_note": MAX_LICENSE_NOTE_LENGTH * 4}


class UnsupportedMediaType(ApiError):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class MalformedUpload(ApiError):
    status, title, slug = 400, "Bad request", "bad-request"


@dataclass
class ReceivedUpload:
    path: Path
    sha256: str
    size: int
    filename: str | None
    name: str | None
    license_note: str | None


# --- receiving an upload ---------------------------------------------------------------------------


class _UploadParser:
    """Callbacks for python-multipart's push parser; file bytes are queued and written by `drain`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.headers: dict[str, str] = {}
        self.field: str | None = None
        self.filename: str | None = None
        self.text: dict[str, bytearray] = {}
        self.file_seen = False
        self.file_filename: str | None = None
        self.pending: list[bytes] = []
        self.size = 0
        self.digest = hashlib.sha256()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda data, start, end: self.header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self.header_value.extend(data[start:end]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
        }

    def on_part_begin(self) -> None:
        self.headers = {}
        self.field = None

    def on_header_end(self) -> None:
        self.headers[self.header_field.decode("latin-1").lower()] = self.header_value.decode("latin-1")
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        disposition = self.headers.get("content-disposition")
        if disposition is None:
            raise MalformedUpload("body: a multipart part has no Content-Disposition header")
        message = Message()
        message["content-disposition"] = disposition
        name = message.get_param("name", header="content-disposition")
        filename = message.get_filename()
        if not isinstance(name, str):
            raise MalformedUpload("body: a multipart part has no field name")
        if name not in UPLOAD_FIELDS:
            raise InvalidRequest(f"body {name}: unknown form field; expected {', '.join(UPLOAD_FIELDS)}")
        if name == "file":
            if self.file_seen:
                raise InvalidRequest("body file: send one file per request")
            self.file_seen = True
            if filename is not None:
                try:
                    check_name(filename)  # it names the model when the form gives no name
                except ValueError as exc:
                    raise InvalidRequest(f"body file: the file name {exc}") from None
            self.file_filename = filename
        elif name in self.text:
            raise InvalidRequest(f"body {name}: given more than once")
        else:
            self.text[name] = bytearray()
        self.field = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.field == "file":
            chunk = bytes(data[start:end])
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise PayloadTooLarge(
                    f"body file: the upload exceeds the limit of {self.max_bytes} bytes (STYLEGAN_MAX_UPLOAD_BYTES)"
                )
            self.digest.update(chunk)
            self.pending.append(chunk)
        elif self.field is not None:
            buffer = self.text[self.field]
            buffer.extend(data[start:end])
            if len(buffer) > _TEXT_FIELD_LIMITS[self.field]:
                raise InvalidRequest(f"body {self.field}: too long")

    def text_field(self, name: str, max_chars: int, check: Callable[[str], str]) -> str | None:
        raw = self.text.get(name)
        if raw is None:
            return None
        try:
            # Checked before the surrounding whitespace goes: str.strip() also drops control
            # characters such as U+0085, which would make a refused name an accepted one.
            value = check(raw.decode("utf-8")).strip()
        except UnicodeDecodeError:
            raise InvalidRequest(f"body {name}: not UTF-8 text") from None
        except ValueError as exc:
            raise InvalidRequest(f"body {name}: {exc}") from None
        if not value:
            raise InvalidRequest(f"body {name}: must not be empty when given")
        if len(value) > max_chars:
            raise InvalidRequest(f"body {name}: at most {max_chars} characters, got {len(value)}")
        return value


async def receive_upload(
    stream: AsyncIterator[bytes], content_type: str, scratch: Path, max_bytes: int
) -> ReceivedUpload:
    """Parse a multipart upload from `stream` into a scratch file; removes it if anything fails."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise MalformedUpload("header Content-Type: multipart/form-data needs a boundary parameter")
    receiver = _UploadParser(max_bytes)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    path = scratch_file(scratch, ".upload")
    try:
        with path.open("wb") as out:
            async for chunk in stream:
                try:
                    parser.write(chunk)
                except MultipartParseError as exc:
                    raise MalformedUpload(f"body: malformed multipart/form-data: {exc}") from None
                if receiver.pending:
                    data, receiver.pending = b"".join(receiver.pending), []
                    await run_in_threadpool(out.write, data)
            try:
                parser.finalize()
            except MultipartParseError as exc:
                raise MalformedUpload(f"body: malformed multipart/form-data: {exc}") from None
        if not receiver.file_seen:
            raise InvalidRequest("body file: field required (the network file, as a multipart file field)")
        if receiver.size == 0:
            raise InvalidRequest("body file: the file is empty")
        return ReceivedUpload(
            path=path,
            sha256=receiver.digest.hexdigest(),
            size=receiver.size,
            filename=receiver.file_filename,
            name=receiver.text_field("name", MAX_NAME_LENGTH, check_name),
            license_note=receiver.text_field("license_note", MAX_LICENSE_NOTE_LENGTH, check_text),
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise


# --- use cases -------------------------------------------------------------------------------------------


def create_from_upload(
    session: Session, settings: Settings, upload: ReceivedUpload, *, owner_key: str | None
) -> tuple[Model, bool]:
    """Register the uploaded file (sandboxed import unless this owner has these bytes already);
    (model, created). The scratch file is removed in every case."""
    try:
        with naming("body file"):
            if find_model(session, owner_key, upload.sha256) is None:  # a re-upload stores nothing new
                enforce_storage_quota(
                    session, settings, owner_key, upload.path.stat().st_size, field="body file"
                )
            return register_model(
                session,
                make_storage(settings),
                src=upload.path,
                sha256=upload.sha256,
                owner_key=owner_key,
                name=upload.name or default_name(upload.filename, upload.sha256),
                source=f"upload:{upload.filename}" if upload.filename else "upload",
                limits=ImportLimits.from_settings(settings),
                scratch=scratch_dir(settings),
                license_note=upload.license_note,
            )
    finally:
        with contextlib.suppress(OSError):
            upload.path.unlink(missing_ok=True)


def catalog_path(settings: Settings) -> Path:
    return settings.catalog_file if settings.catalog_file is not None else BUNDLED_CATALOG


def list_catalog(settings: Settings) -> tuple[CatalogEntry, ...]:
    return load_catalog(catalog_path(settings))


def start_import(
    session: Session,
    celery: Celery,
    settings: Settings,
    *,
    request: ModelImportRequest,
    owner_key: str | None,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    """Queue a `model_import` job for a catalogue entry or a URL; (job, created)."""
    license_note = request.license_note
    if request.catalog is not None:
        entry = catalog_entry(request.catalog, catalog_path(settings))
        url, sha256 = entry.url, entry.sha256
        if license_note is None:
            use = "commercial use allowed" if entry.commercial_use else "non-commercial use only"
            license_note = f"{entry.license} ({use})" + (
                f": {entry.license_url}" if entry.license_url else ""
            )
    else:
        assert request.url is not None  # the schema requires exactly one of catalog and url
        url, sha256 = request.url, request.sha256
    with naming(f"body {'catalog' if request.catalog is not None else 'url'}: {url!r} refused"):
        check_public_url(url, settings.allow_private_urls)
    params = {
        "url": url,
        "sha256": sha256,
        "name": request.name,
        "catalog": request.catalog,
        "license_note": license_note,
    }
    return jobs_service.submit_job(
        session,
        celery,
        settings,
        request=JobCreate(kind="model_import", params=params, webhook_url=request.webhook_url),
        owner_key=owner_key,
        idempotency_key=idempotency_key,
    )


def get_model(session: Session, model_id: str, *, owner_key: str | None) -> Model:
    """The model if this key may see it; NotFound otherwise (another key's model does not exist here).
    Other services (sampling, mixing, training) look models up through this."""
    row = load_visible(session, Model, model_id, owner_key)
    if row is None:
        raise NotFound(f"no model with id {model_id!r}")
    return row


def list_models(
    session: Session, *, owner_key: str | None, limit: int, offset: int
) -> tuple[list[Model], int]:
    where = visible_to(Model, owner_key)
    total = session.scalar(sa.select(sa.func.count()).select_from(Model).where(*where)) or 0
    rows = session.scalars(
        sa.select(Model).where(*where).order_by(Model.created_at.desc(), Model.id).limit(limit).offset(offset)
    ).all()
    return list(rows), total


def delete_model(session: Session, settings: Settings, model_id: str, *, owner_key: str | None) -> None:
    """Delete the row, and the stored file once no other row (another key's) uses it."""
    row = get_model(session, model_id, owner_key=owner_key)
    if is_demo(row):
        # Visible to every key, so 404 would be untrue; it is shared, so no key may remove it.
        raise Forbidden(
            f"model {model_id} is the bundled demo model, shared by every key; it cannot be deleted"
        )
    key = row.file_key
    session.delete(row)
    session.commit()
    delete_model_file_if_unused(session, make_storage(settings), key)


def model_is_demo(row: Model) -> bool:
    return is_demo(row)
