"""`/v1/jobs`: thin routes; the use cases live in `api.services.jobs`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.deps import (
    CeleryDep,
    IdempotencyKey,
    OwnerDep,
    SessionDep,
    SettingsDep,
    accepted,
    accepted_responses,
)
from api.schemas.common import MAX_OFFSET, problem_responses
from api.schemas.jobs import JobCreate, JobList, JobOut, JobStateName, job_out
from api.services import jobs as service

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=problem_responses(401))


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Queue a job",
    responses={**accepted_responses(JobOut, "The job"), **problem_responses(413, 422, 429, 503)},
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
    accepted(response, created, f"/v1/jobs/{job.id}")
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
