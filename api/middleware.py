"""Request-size limits as a plain ASGI middleware.

Uploads (multipart, octet-stream, zip, images) may be as large as the upload limit from settings; every
other body (JSON) is capped at `MAX_JSON_BYTES` as well, since no JSON request we take is anywhere near
it and parsing a huge document would hold a worker thread and its memory.

The limit is enforced before the body is read: a declared `Content-Length` over the limit is refused at
once, and a chunked body is counted as it streams and cut off at the first chunk that crosses it, so a
client cannot make the server buffer more than the limit.
"""

from __future__ import annotations

import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PayloadTooLarge, problem

MAX_JSON_BYTES = 1024 * 1024
_UPLOAD_TYPES = (b"multipart/", b"application/octet-stream", b"application/zip", b"image/")


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        if max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", ())
        content_type = next((v.lower() for k, v in headers if k == b"content-type"), b"")
        limit = self.max_body_bytes
        if not content_type.startswith(_UPLOAD_TYPES):
            limit = min(limit, MAX_JSON_BYTES)
        for name, value in headers:
            if name != b"content-length":
                continue
            if not value.isdigit():
                response = problem(
                    400,
                    "Bad request",
                    f"Content-Length {value.decode('latin-1')!r} is not a number",
                    slug="bad-request",
                )
                await response(scope, receive, send)
                return
            if int(value) > limit:
                await _too_large(f"request body of {int(value)} bytes", limit)(scope, receive, send)
                return

        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
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
            await _too_large("request body", limit)(scope, receive, send)


def _too_large(what: str, limit: int) -> ASGIApp:
    return PayloadTooLarge(
        f"{what} exceeds the limit of {limit} bytes", headers={"Connection": "close"}
    ).to_response()
