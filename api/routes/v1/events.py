"""`GET /v1/jobs/{id}/events`: a job's progress as Server-Sent Events (see `api.services.events`)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import OwnerDep, SettingsDep
from api.schemas.common import problem_responses
from api.services import events as service
from api.services import jobs as job_service
from worker.wire import MAX_INT64

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=problem_responses(401))

SSE_EXAMPLE = (
    "retry: 2000\n\n"
    'id: 41\nevent: state\ndata: {"state":"running"}\n\n'
    'id: 42\nevent: progress\ndata: {"fraction":0.1,"kimg":20.0,"total_kimg":200.0,"eta_seconds":1800.0}\n\n'
    'id: 43\nevent: preview\ndata: {"artifact_id":"...","url":"/v1/artifacts/...","name":"fakes000020.png"}\n\n'
    'id: 44\nevent: checkpoint\ndata: {"checkpoint_id":"...","kimg":20.0,"metrics":{}}\n\n'
    ": keep-alive\n\n"
    'id: 57\nevent: state\ndata: {"state":"succeeded"}\n\n'
)


@router.get(
    "/{job_id}/events",
    summary="Stream a job's events (Server-Sent Events)",
    description=(
        "`text/event-stream` of the job's events, oldest first: `progress`, `preview`, `checkpoint` and "
        "`state` (every transition). Each has `id:` (resume by sending it back as `Last-Event-ID`, or as "
        "`?after=` where headers cannot be set), `event:` and `data:` (JSON). Idle streams get a "
        "`: keep-alive` comment every few seconds. The stream closes after the terminal state event."
    ),
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"example": SSE_EXAMPLE}}, "description": "The event stream."},
        **problem_responses(404, 422),
    },
)
async def job_events(
    job_id: str,
    request: Request,
    settings: SettingsDep,
    owner: OwnerDep,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_INT64, description="Only events with a larger id.")
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None,
) -> StreamingResponse:
    sessions = request.app.state.session_factory

    def check_owner() -> None:
        # A short session of its own: a dependency session would hold a pooled connection for as long
        # as the stream stays open.
        with sessions() as session:
            job_service.get_job(session, job_id, owner_key=owner)  # 404: missing, or another key's

    await anyio.to_thread.run_sync(check_owner)
    start = service.resume_point(last_event_id, after)
    stream = service.stream_events(
        sessions,
        job_id,
        start,
        poll_seconds=settings.events_poll_seconds,
        keepalive_seconds=settings.events_keepalive_seconds,
        is_disconnected=request.is_disconnected,
    )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: do not buffer the stream
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
