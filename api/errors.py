"""Every 4xx/5xx answer is `application/problem+json` (RFC 9457).

HTTP errors are `ApiError` subclasses raised by services; the worker's domain errors (a job that does
not exist, a transition the state table refuses, bad job params, an unknown catalogue entry) propagate
from services untouched and are mapped here, in `DOMAIN_ERRORS`, the one place they meet HTTP. Where
the field at fault depends on the call (a URL in `webhook_url` or in `url`), the service wraps the call
in `naming(field)`. One set of handlers, installed by `install_error_handlers`, turns all of these,
framework errors (unknown route, wrong method, request validation) and unhandled exceptions into a
problem document with `type`, `title`, `status` and a `detail` that names the field and value at fault.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from gan.errors import GanError
from worker.catalog import UnknownCatalogEntry
from worker.job_kinds import InvalidJobParams
from worker.jobs import IdempotencyConflict, IllegalTransition, JobNotFound
from worker.net import UnsafeUrl

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
# RFC 9457 §3.1.1: `type` is a URI reference; relative ones resolve against the API's base URL.
PROBLEM_TYPE_BASE = "/problems/"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_CONTENT_TYPE

    def render(self, content: Any) -> bytes:
        # ASCII with escapes: a refusal may quote a client's lone surrogate, which has no UTF-8 form.
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    body = {"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status, "detail": detail}
    body.update(extensions)
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


class ApiError(Exception):
    """An error the client caused (or may retry); its message is the problem's `detail`."""

    status: int = 400
    title: str = "Bad request"
    slug: str = "bad-request"

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})

    def to_response(self) -> ProblemResponse:
        return problem(self.status, self.title, self.detail, slug=self.slug, headers=self.headers)


class NotFound(ApiError):
    status, title, slug = 404, "Not found", "not-found"


class Unauthorized(ApiError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str) -> None:
        # RFC 9110 §11.6.1: a 401 must say which scheme would be accepted.
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="stylegan"'})


class Conflict(ApiError):
    status, title, slug = 409, "Conflict", "conflict"


class InvalidRequest(ApiError):
    """The request is well formed but names something impossible (unknown kind, bad parameter)."""

    status, title, slug = 422, "Invalid request", "invalid-request"


class UnknownQueryParameters(InvalidRequest):
    """The query string names parameters the route does not declare (`?trunc=0.5` for `?psi=0.5`).

    Ignoring them would answer a different request than the one sent, as JSON bodies already refuse
    unknown fields; `errors` lists each one as validation errors do.
    """

    slug = "unknown-query-parameter"

    def __init__(self, unknown: Mapping[str, str], accepted: Sequence[str]) -> None:
        allowed = ", ".join(sorted(accepted)) if accepted else "none"
        sentences = [
            f"query {name}: unknown parameter (got {_short(value)})" for name, value in unknown.items()
        ]
        super().__init__(f"{'; '.join(sentences)}; this route accepts query parameters: {allowed}")
        self.errors = [
            {"field": f"query {name}", "message": "unknown parameter", "value": echo(value)}
            for name, value in unknown.items()
        ]

    def to_response(self) -> ProblemResponse:
        return problem(self.status, self.title, self.detail, slug=self.slug, errors=self.errors)


class NotAZipArchive(InvalidRequest):
    """An upload named `.zip` (or starting like one) that is not a readable zip archive."""

    slug = "not-a-zip-archive"

    def __init__(self, field: str, filename: str) -> None:
        super().__init__(
            f"{field}: {filename!r} is not a zip archive (no readable zip directory; truncated, or another "
            "format renamed); upload a real .zip, or the images themselves"
        )


class IdempotencyKeyReused(ApiError):
    status, title, slug = 422, "Idempotency key reused", "idempotency-key-reused"


class PayloadTooLarge(ApiError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class Forbidden(ApiError):
    """The caller sees the resource but may not do this to it (the shared demo model cannot be deleted)."""

    status, title, slug = 403, "Forbidden", "forbidden"


class RangeNotSatisfiable(ApiError):
    status, title, slug = 416, "Range not satisfiable", "range-not-satisfiable"


class ServiceUnavailable(ApiError):
    status, title, slug = 503, "Service unavailable", "service-unavailable"


def _invalid_params(exc: InvalidJobParams) -> str:
    # `field` is `kind` or `params.<name>`; the value is echoed (shortened) except for the kind.
    got = f" (got {_short(exc.value)})" if exc.value is not None and exc.field != "kind" else ""
    return f"body {exc.field}: {exc.message}{got}"


# The domain errors services let through: exception type -> (status, title, slug, detail).
DOMAIN_ERRORS: dict[type[Exception], tuple[int, str, str, Callable[[Any], str]]] = {
    JobNotFound: (404, "Not found", "not-found", str),
    IllegalTransition: (
        409,
        "Conflict",
        "conflict",
        lambda exc: f"job {exc.job_id} is already {exc.current} and can no longer be {exc.target.value}",
    ),
    IdempotencyConflict: (
        422,
        "Idempotency key reused",
        "idempotency-key-reused",
        lambda exc: (
            f"header Idempotency-Key: {exc.idempotency_key!r} was already used with a different "
            f"request (job {exc.existing_job_id}); use a new key for a new request"
        ),
    ),
    InvalidJobParams: (422, "Invalid request", "invalid-request", _invalid_params),
    UnknownCatalogEntry: (422, "Invalid request", "invalid-request", lambda exc: f"body catalog: {exc}"),
}


@contextmanager
def naming(field: str, got: str | None = None) -> Iterator[None]:
    """Run a domain call whose bad input is `field` (`body file`, `body url`): its refusal (a GanError,
    such as a refused network file, or a refused URL) becomes a 422 that names the field, and the
    value when `got` is given."""
    try:
        yield
    except (GanError, UnsafeUrl) as exc:
        value = f" (got {got!r})" if got is not None else ""
        raise InvalidRequest(f"{field}: {exc}{value}") from None


_STATUS_TITLES = {
    400: ("Bad request", "bad-request"),
    401: ("Unauthorized", "unauthorized"),
    403: ("Forbidden", "forbidden"),
    404: ("Not found", "not-found"),
    405: ("Method not allowed", "method-not-allowed"),
    406: ("Not acceptable", "not-acceptable"),
    413: ("Payload too large", "payload-too-large"),
    415: ("Unsupported media type", "unsupported-media-type"),
    422: ("Invalid request", "invalid-request"),
    429: ("Too many requests", "too-many-requests"),
    503: ("Service unavailable", "service-unavailable"),
}


def _location(loc: Sequence[str | int]) -> str:
    """`("body", "params", "seconds")` -> `params.seconds`; the `body`/`query` prefix is in the message."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"}:
        where, rest = parts[0], parts[1:]
        return f"{where} {'.'.join(rest)}" if rest else where
    return ".".join(parts)


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# The most of a client's input a validation problem repeats back: enough to recognise the value, never
# the whole of it (a 1 MiB string sent back inside `detail` and `errors` would double every refusal).
MAX_ECHO_CHARS = 200


def echo(value: Any) -> Any:
    """A client's value as a problem's `errors` repeat it: JSON-safe (bytes decoded, NaN and
    infinities as strings, which strict JSON has no number for) and at most MAX_ECHO_CHARS long."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value[: MAX_ECHO_CHARS + 1]).decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        text = value
    else:
        # A container: as itself when small and plain, else its JSON text, cut.
        text = json.dumps(value, default=str)
        if len(text) <= MAX_ECHO_CHARS and "NaN" not in text and "Infinity" not in text:
            return json.loads(text)
    return text if len(text) <= MAX_ECHO_CHARS else text[:MAX_ECHO_CHARS] + "..."


def describe_validation_errors(errors: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """One readable sentence per error, joined, plus the structured list (field, value, message)."""
    sentences: list[str] = []
    items: list[dict[str, Any]] = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        kind = error.get("type", "")
        message = str(error.get("msg", "invalid"))
        if kind == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", message)
            position = loc[1] if len(loc) > 1 else "?"
            sentence = f"request body is not valid JSON: {reason} at character {position}"
            items.append({"field": "body", "message": sentence})
        elif kind == "missing":
            sentence = f"{_location(loc)}: field required"
            items.append({"field": _location(loc), "message": "field required"})
        else:
            field = _location(loc)
            value = error.get("input")
            if kind == "too_long" and isinstance(value, str):
                # A length checked after a validator (worker.wire.Name) is worded for any sequence.
                message = (
                    f"String should have at most {(error.get('ctx') or {}).get('max_length')} characters"
                )
            sentence = f"{field}: {message} (got {_short(value)})"
            items.append({"field": field, "message": message, "value": echo(value)})
        sentences.append(sentence)
    return "; ".join(sentences), items


async def _validation_handler(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    detail, items = describe_validation_errors(exc.errors())
    # jsonable: `echo` made each value JSON-safe; `default=str` covers what else pydantic may put there.
    safe = json.loads(json.dumps(items, default=str))
    return problem(422, "Invalid request", detail, slug="invalid-request", errors=safe)


async def _api_error_handler(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ApiError)
    return exc.to_response()


async def _domain_error_handler(request: Request, exc: Exception) -> ProblemResponse:
    kind = next(k for k in type(exc).__mro__ if k in DOMAIN_ERRORS)
    status, title, slug, detail = DOMAIN_ERRORS[kind]
    return problem(status, title, detail(exc), slug=slug)


async def _gan_error_handler(request: Request, exc: Exception) -> ProblemResponse:
    return problem(422, "Invalid request", str(exc), slug="invalid-request")


async def _http_error_handler(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    title, slug = _STATUS_TITLES.get(exc.status_code, ("Error", f"http-{exc.status_code}"))
    if exc.status_code == 404 and exc.detail in (None, "Not Found"):
        detail = f"no route matches {request.method} {request.url.path}"
    elif exc.status_code == 405:
        allowed = _allowed_methods(request)
        detail = f"method {request.method} is not allowed on {request.url.path}; allowed: {allowed}"
        # Starlette names only the first route matching the path; one path often has several (GET, POST).
        headers = {**(exc.headers or {}), "Allow": allowed}
        return problem(405, title, detail, slug=slug, headers=headers)
    else:
        detail = str(exc.detail)
    return problem(exc.status_code, title, detail, slug=slug, headers=exc.headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method some route accepts on this path, asked of the router itself (not its internals)."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    return ", ".join(allowed)


# A request that finds the database gone (PostgreSQL restarting, a network cut, SQLite locked past its
# busy timeout) is the service being unavailable for a moment, not a bug: 503 with Retry-After, and the
# pool's pre-ping reconnects on the next request once the database is back, without a restart.
DATABASE_RETRY_AFTER_S = 5


def _database_unavailable(
    request: Request, why: str, slug: str, cause: BaseException | None
) -> ProblemResponse:
    # The cause (a driver's message, with host and port) goes to the log only.
    logger.warning("%s on %s %s: %s", why, request.method, request.url.path, cause)
    return problem(
        503,
        "Service unavailable",
        f"{why}; retry in {DATABASE_RETRY_AFTER_S} s",
        slug=slug,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


async def _database_error_handler(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, DBAPIError)
    if not isinstance(exc, (OperationalError, InterfaceError)) and not exc.connection_invalidated:
        return await _unhandled_handler(request, exc)
    return _database_unavailable(
        request, f"the database is unavailable ({type(exc.orig).__name__})", "database-unavailable", exc.orig
    )


async def _pool_exhausted_handler(request: Request, exc: Exception) -> ProblemResponse:
    # Every pooled connection stayed checked out for the whole pool timeout: the service is saturated,
    # which a client should meet as a 503 to retry, not as a 500 (seen under load before sampling
    # requests gave their connection back while waiting for the inference worker).
    return _database_unavailable(request, "every database connection is in use", "database-busy", exc)


async def _unhandled_handler(request: Request, exc: Exception) -> ProblemResponse:
    # The traceback goes to the log only: a 500 must not leak paths, SQL or settings to the client.
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(
        500, "Internal server error", "the server failed to handle this request", slug="internal-error"
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(GanError, _gan_error_handler)
    for kind in DOMAIN_ERRORS:
        app.add_exception_handler(kind, _domain_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(DBAPIError, _database_error_handler)
    app.add_exception_handler(PoolTimeout, _pool_exhausted_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
