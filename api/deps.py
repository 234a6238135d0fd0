"""What routes need, as `Annotated` dependencies: settings, a database session, the Celery app and the
caller's owner key. Everything hangs off `app.state`, set once by `create_app`; nothing is global."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Request, Response, status
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.errors import Unauthorized, UnknownQueryParameters
from worker.settings import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


def get_celery(request: Request) -> Celery:
    celery: Celery = request.app.state.celery
    return celery


def owner_key_for(api_key: str) -> str:
    """The id stored with a caller's rows: a digest, so the database never holds a usable key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def get_owner(request: Request, settings: Annotated[Settings, Depends(get_app_settings)]) -> str | None:
    """None when auth is off (no keys configured): everything is visible to everyone.

    With keys set, a missing or wrong key is 401, and the caller sees only rows carrying its own owner
    key, so another key's job is indistinguishable from one that does not exist (404, not 403).
    """
    keys = list(settings.api_keys)
    if not keys:
        return None
    header = request.headers.get("authorization")
    if header is None:
        raise Unauthorized("missing Authorization header; send `Authorization: Bearer <api key>`")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Authorization header must be `Bearer <api key>`")
    # Compare every key in constant time so the answer's timing says nothing about near misses.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token.encode(), key.encode())
    if not matched:
        raise Unauthorized("the API key is not valid")
    return owner_key_for(token)


# Retry-safe submission on every job-creating route: the same key and body give the same job back (200),
# the same key with another body is a 422.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Retry-safe submission: the same key and body return the same job (200); the same key "
        "with another body is 422. A job refused for want of a broker (503) frees its key for the retry.",
        examples=["3b1f2c62-order-42"],
    ),
]


def accepted_responses(model: type[BaseModel], what: str) -> dict[int | str, dict[str, object]]:
    """The OpenAPI answers of a route that queues a job (see `accepted`)."""
    return {
        200: {"model": model, "description": "Replay of an earlier request with the same Idempotency-Key."},
        202: {"model": model, "description": f"{what} was queued; poll the `Location`."},
    }


def accepted(response: Response, created: bool, location: str) -> None:
    """The one answer of every route that queues a job: 202 Accepted with the job's `Location`, or 200
    when an Idempotency-Key replays an earlier request (nothing new was queued)."""
    response.status_code = status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
    response.headers["Location"] = location


def declared_query_params(route: APIRoute) -> frozenset[str]:
    """The query names `route` reads (by alias): its own and those of every dependency, however deep,
    with a pydantic model taken as query parameters counted field by field."""
    names: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        for field in dependant.query_params:
            model = field.field_info.annotation
            if isinstance(model, type) and issubclass(model, BaseModel):
                names.update(f.alias or name for name, f in model.model_fields.items())
            else:
                names.add(field.alias)
        pending.extend(dependant.dependencies)
    return frozenset(names)


def reject_unknown_query_params(request: Request) -> None:
    """422 for a query parameter the matched route does not declare, installed once for every route
    (`create_app`): a misspelt `?trunc=0.5` silently ignored would answer a request nobody sent."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared = declared_query_params(route)
    unknown = {name: value for name, value in request.query_params.items() if name not in declared}
    if unknown:
        raise UnknownQueryParameters(unknown, sorted(declared))


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
OwnerDep = Annotated[str | None, Depends(get_owner)]
