"""`/v1/artifacts/{id}` (download, with Range and HEAD) and `/v1/jobs/{id}/artifacts` (a job's files)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response, status
from fastapi.responses import StreamingResponse

from api.deps import OwnerDep, SessionDep, SettingsDep
from api.errors import NotFound
from api.schemas.artifacts import ArtifactList, artifact_out
from api.schemas.common import problem_responses
from api.services import artifacts as service
from worker.storage import make_storage

router = APIRouter(tags=["artifacts"], responses=problem_responses(401))

# Artifacts never change once written, and they belong to one key: browsers may keep them, shared
# caches must not.
CACHE_CONTROL = "private, max-age=31536000, immutable"
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


_DOWNLOAD_DESCRIPTION = (
    "The file with its content type, Content-Length and a strong ETag (its sha256). One byte range "
    "(`Range: bytes=0-1023`, `bytes=1024-`, `bytes=-512`) is answered with 206 and Content-Range; a range "
    "past the end is 416. `If-None-Match` with the ETag gives 304."
)
_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The whole file.", "content": {"application/octet-stream": {}}},
    206: {"description": "The requested byte range.", "content": {"application/octet-stream": {}}},
    304: {"description": "The client's copy (If-None-Match) is current."},
    **problem_responses(404, 416),
}


@router.get(
    "/artifacts/{artifact_id}",
    summary="Download an artifact",
    operation_id="download_artifact",
    description=_DOWNLOAD_DESCRIPTION,
    response_class=Response,
    responses=_DOWNLOAD_RESPONSES,
)
@router.head(
    "/artifacts/{artifact_id}",
    summary="An artifact's headers (size, type, ETag) without its body",
    operation_id="head_artifact",
    description=_DOWNLOAD_DESCRIPTION,
    response_class=Response,
    responses=_DOWNLOAD_RESPONSES,
)
def download_artifact(
    artifact_id: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    owner: OwnerDep,
    range_header: Annotated[str | None, Header(alias="Range", max_length=200)] = None,
    if_range: Annotated[str | None, Header(alias="If-Range", max_length=200)] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=1000)] = None,
) -> Response:
    row = service.get_artifact(session, artifact_id, owner_key=owner)
    storage = make_storage(settings)
    if not storage.exists(row.file_key):
        raise NotFound(f"artifact {artifact_id}: its file is no longer in storage")
    size = storage.size(row.file_key)
    etag = service.etag(row)
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": CACHE_CONTROL,
        "Content-Disposition": f'inline; filename="{_UNSAFE_FILENAME.sub("_", row.name) or "artifact"}"',
    }
    if if_none_match is not None and etag in {tag.strip() for tag in if_none_match.split(",")} | {"*"}:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    # If-Range: send the range only if the client's copy is this very file; otherwise the whole file.
    wanted = range_header if if_range is None or if_range.strip() == etag else None
    byte_range = service.parse_range(wanted, size)
    start, length = (0, size) if byte_range is None else (byte_range.start, byte_range.length)
    headers["Content-Length"] = str(length)
    code = status.HTTP_200_OK
    if byte_range is not None:
        code = status.HTTP_206_PARTIAL_CONTENT
        headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"
    if request.method == "HEAD":
        return Response(status_code=code, headers=headers, media_type=row.content_type)
    return StreamingResponse(
        service.read_bytes(storage, row.file_key, start, length),
        status_code=code,
        headers=headers,
        media_type=row.content_type,
    )


@router.get(
    "/jobs/{job_id}/artifacts",
    summary="List a job's artifacts",
    tags=["jobs"],
    responses=problem_responses(404),
)
def list_job_artifacts(job_id: str, session: SessionDep, owner: OwnerDep) -> ArtifactList:
    rows = service.list_job_artifacts(session, job_id, owner_key=owner)
    return ArtifactList(items=[artifact_out(row) for row in rows])
