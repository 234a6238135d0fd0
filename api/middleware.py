"""Request-body limits as a plain ASGI middleware, enforced before anything parses the body.

Each route's limit is declared where the route is (`upload_route`): the routes that take a
multipart upload (datasets, network files, projection targets) accept up to their settings' limit;
every other body, whatever its Content-Type claims, is capped at `max_json_body_bytes` (1 MiB), since
no JSON request we take is anywhere near it and a JSON route handed 100 MiB of octet-stream would
otherwise read it all to tell the client it is not JSON.

A declared `Content-Length` over the limit is refused at once; otherwise the body is counted as it
arrives and cut off at the first chunk that crosses the limit, so a client cannot make the server
buffer more than the limit. A JSON body (at most 1 MiB, buffered here) is also measured for nesting
before the framework parses it: Python's parser recurses once per level and fails past about a
thousand with a RecursionError, not a ValueError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import InvalidRequest, PayloadTooLarge, problem
from worker.settings import Settings
from worker.wire import MAX_JSON_DEPTH, json_depth

MAX_JSON_BYTES: int = Settings.model_fields["max_json_body_bytes"].default
_UPLOAD_TYPE = b"multipart/form-data"
# Parts other than the file in a projection upload (space, steps, seed, ...) and multipart framing.
FORM_OVERHEAD_BYTES = 64 * 1024

Endpoint = TypeVar("Endpoint", bound=Callable[..., object])
UploadLimit = Callable[[Settings], int]


def upload_route(limit: UploadLimit) -> Callable[[Endpoint], Endpoint]:
    """Mark an endpoint as taking a multipart upload of up to `limit(settings)` bytes (put it under
    the route decorator); other requests to it, and every unmarked route, get the JSON limit."""

    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.upload_limit = limit  # type: ignore[attr-defined]
        return endpoint

    return mark


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def _upload_limit(self, scope: Scope) -> int:
        # Routing has happened by the time the app first reads the body: the router put the matched
        # route into this same scope.
        route = scope.get("route")
        limit: UploadLimit | None = getattr(getattr(route, "endpoint", None), "upload_limit", None)
        return limit(self.settings) if limit is not None else self.settings.max_json_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", ())
        content_type = next((v.lower() for k, v in headers if k == b"content-type"), b"")
        declared: int | None = None
        for name, value in headers:
            if name != b"content-length":
                continue
            if not value.isdigit():
                response = problem(
                    400,
                    "Bad request",
                    f"Content-Length {value[:40].decode('latin-1')!r} is not a number",
                    slug="bad-request",
                )
                await response(scope, receive, send)
                return
            declared = int(value)
        is_upload = content_type.startswith(_UPLOAD_TYPE)
        limit = self.settings.max_json_body_bytes
        if not is_upload:
            if declared is not None and declared > limit:
                await _too_large(f"request body of {declared} bytes", limit)(scope, receive, send)
                return
            if content_type.startswith(b"application/json") or b"+json" in content_type.split(b";")[0]:
                await self._json(scope, receive, send, limit)
                return

        received = 0
        exceeded = False
        started = False
        first = True

        async def counting_receive() -> Message:
            nonlocal received, exceeded, first, limit
            if first:
                first = False
                if is_upload:
                    limit = self._upload_limit(scope)
                if declared is not None and declared > limit:
                    exceeded = True
                    raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # Once the body overflowed, whatever the app answers (FastAPI turns a failed body read into
            # a 400) is replaced by the 413 below.
            if exceeded:
                return
            started = True
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if exceeded and not started:
            what = (
                f"request body of {declared} bytes"
                if declared is not None and declared > limit
                else "request body"
            )
            await _too_large(what, limit)(scope, receive, send)

    async def _json(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Read the whole (small) JSON body here, judge its size and depth, then hand it on."""
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                await _too_large("request body", limit)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        depth = json_depth(body)
        if depth > MAX_JSON_DEPTH:
            refusal = InvalidRequest(
                f"body: JSON nested {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted"
            )
            await refusal.to_response()(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: waits for the disconnect, as the server would

        await self.app(scope, replay, send)


def _too_large(what: str, limit: int) -> ASGIApp:
    return PayloadTooLarge(
        f"{what} exceeds the limit of {limit} bytes", headers={"Connection": "close"}
    ).to_response()
