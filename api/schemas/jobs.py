"""Job wire format. ORM rows become these in `job_out` only, so column names never leak into the API."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.wire import Name, WireModel

if TYPE_CHECKING:
    from worker.db.models import Job

JobStateName = Literal["queued", "running", "succeeded", "failed", "canceled"]

# Optional on every job-creating request; checked by api.services.webhooks.check_webhook_url.
WEBHOOK_URL_FIELD: Any = Field(
    default=None,
    min_length=1,
    max_length=2000,
    description="When the job ends (succeeded, failed or canceled) the service POSTs "
    '`{"event": "job.<state>", "job": <this job>}` here, signed with HMAC-SHA256 in '
    "`X-StyleGAN-Signature` and retried with backoff (see worker/webhooks.py). http(s) only; "
    "private and loopback hosts are refused unless STYLEGAN_ALLOW_PRIVATE_URLS is set.",
    examples=["https://example.com/hooks/stylegan"],
)


class JobCreate(WireModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"kind": "probe", "params": {}},
                {"kind": "probe", "params": {"seconds": 5}},
            ]
        },
    )

    kind: str = Field(
        description="What to run; `probe` proves the queue path end to end. Only `probe` is accepted "
        "here: the other kinds (training, projections, imports...) have their own routes.",
        examples=["probe"],
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters for this kind, checked before the job is queued."
    )
    webhook_url: Name | None = WEBHOOK_URL_FIELD


class JobOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f2c9f0e-7b1a-4c52-9d3e-2f7a1f0b8c11",
                    "kind": "probe",
                    "state": "running",
                    "progress": 0.4,
                    "progress_detail": {"step": 2, "of": 5},
                    "params": {"seconds": 5},
                    "result": None,
                    "error": None,
                    "attempts": 1,
                    "cancel_requested": False,
                    "created_at": "2026-01-01T12:00:00Z",
                    "started_at": "2026-01-01T12:00:01Z",
                    "finished_at": None,
                }
            ]
        }
    )

    id: str
    kind: str
    state: JobStateName
    progress: float = Field(ge=0.0, le=1.0)
    progress_detail: Any = None
    params: dict[str, Any]
    result: Any = None
    error: str | None = None
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    webhook_url: str | None = None


class JobList(BaseModel):
    items: list[JobOut]
    total: int = Field(description="Jobs matching the filters, over all pages.")
    limit: int
    offset: int


def job_out(row: Job) -> JobOut:
    """The one place a job row becomes its wire form."""
    return JobOut(
        id=row.id,
        kind=row.kind,
        state=row.state,  # type: ignore[arg-type]  # the CHECK constraint keeps it one of JobStateName
        progress=row.progress,
        progress_detail=row.progress_detail or None,
        params=row.params or {},
        result=row.result,
        error=row.error,
        attempts=row.attempts,
        cancel_requested=row.cancel_requested,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        webhook_url=row.webhook_url,
    )
