"""Request-size limit as a plain ASGI middleware.

The limit is enforced before the body is read: a declared `Content-Length` over the limit is refused at
once, and a chunked body is counted as it streams and cut off at the first chunk that crosses it, so a
client cannot make the server buffer more than the limit.
"""

from __future__ import annotations

import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PayloadTooLarge, problem


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
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
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
