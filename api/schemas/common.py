"""Wire shapes shared by every resource."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every 4xx/5xx answer."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "/problems/invalid-request",
                    "title": "Invalid request",
                    "status": 422,
                    "detail": 'body params.seconds: Input should be a valid number (got "ten")',
                }
            ]
        },
    )

    type: str = Field(description="URI reference naming the kind of problem.")
    title: str
    status: int
    detail: str = Field(description="What went wrong, naming the field and value at fault.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For validation problems: one entry per field at fault."
    )


# List pages' `offset` goes into SQL OFFSET, a signed 64-bit integer in PostgreSQL and SQLite; a larger
# value is a database error (a 500) unless the query parameter refuses it first.
MAX_OFFSET = 2**63 - 1


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting problem+json answers for the given statuses."""
    return {
        status: {
            "model": Problem,
            "content": {"application/problem+json": {}},
            "description": _DESCRIPTIONS[status],
        }
        for status in statuses
    }


_DESCRIPTIONS = {
    400: "Malformed request.",
    401: "Missing or wrong API key.",
    403: "The resource is visible to this key but the operation is not allowed on it.",
    404: "No such resource visible to this key.",
    409: "The resource is in a state that forbids this.",
    413: "Request body over the size limit.",
    415: "The request's Content-Type is not one this route takes.",
    416: "The requested byte range lies outside the file; `Content-Range` gives its size.",
    422: "The request names an impossible value; `detail` names the field.",
    429: "Over a per-key limit (active jobs, request rate); retry after `Retry-After` seconds.",
    503: "A dependency (database, broker, storage) is unreachable.",
}
