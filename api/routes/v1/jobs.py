"""`/v1/jobs`: thin routes; the use cases live in `api.services.jobs`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from api.deps import CeleryDep, OwnerDep, SessionDep, SettingsDep
from api.schemas.common import MAX_OFFSET, problem_responses
from api.schemas.jobs import JobCreate, JobList, JobOut, JobStateName, job_out
from api.services import jobs as service

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=problem_responses(401))

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Retry-safe submission: the same key and body return the same job; "
        "the same key with another body is 422.",
        examples=["3b1f2c62-order-42"],
    ),
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Queue a job",
    responses={
        200: {"model": JobOut, "description": "Replay of an earlier request with the same Idempotency-Key."},
        201: {"description": "The job was created and queued."},
        **problem_responses(413, 422, 429, 503),
    },
)
def submit_job(
    body: JobCreate,
    response: Response,
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
    owner: OwnerDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    job, created = service.submit_public_job(
        session, celery, settings, request=body, owner_key=owner, idempotency_key=idempotency_key
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_out(job)


@router.get("", summary="List jobs, newest first", responses=problem_responses(422))
def list_jobs(
    session: SessionDep,
    owner: OwnerDep,
    state: Annotated[JobStateName | None, Query(description="Only jobs in this state.")] = None,
    kind: Annotated[str | None, Query(max_length=64, description="Only jobs of this kind.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> JobList:
    rows, total = service.list_jobs(
        session, owner_key=owner, state=state, kind=kind, limit=limit, offset=offset
    )
    return JobList(items=[job_out(row) for row in rows], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", summary="Get a job", responses=problem_responses(404))
def get_job(job_id: str, session: SessionDep, owner: OwnerDep) -> JobOut:
    return job_out(service.get_job(session, job_id, owner_key=owner))


@router.post(
    "/{job_id}/cancel",
    summary="Cancel a job",
    description="A queued job is canceled at once; a running one is asked to stop and is canceled when "
    "it next checks (the answer shows `cancel_requested`). Canceling a finished job is 409.",
    responses=problem_responses(404, 409),
)
def cancel_job(job_id: str, session: SessionDep, owner: OwnerDep) -> JobOut:
    return job_out(service.cancel_job(session, job_id, owner_key=owner))
