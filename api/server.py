"""The HTTP server under the app: uvicorn, with the limits it lacks and problem+json for its own refusals.

uvicorn answers what it cannot parse (a malformed request line, a bad Content-Length, a bad chunk
size) itself, with a `text/plain` 400, before any ASGI middleware sees the request. It also has no
bound on the request line and headers (httptools buffers a header line until it ends) and no read
timeout: a client that sends half a request holds its connection for ever. uvicorn takes the HTTP
protocol as a class (`uvicorn.Config(http=...)`); `protocol_for(settings)` is its httptools protocol
(what `uvicorn[standard]` runs) with

- `max_request_head_bytes` on the request line and headers: 414 while the line is unfinished, 431
  after, as soon as the bytes received without finishing the head pass the limit;
- `request_header_timeout_seconds` from a request's first byte (or the connection's opening) to the
  end of its headers, however slowly they trickle in;
- `request_body_timeout_seconds` of silence while a body is incomplete (not counted while uvicorn
  itself has paused reading because the app has not consumed what came);
- every refusal (those above as 408/414/431, and uvicorn's own 400) as `application/problem+json`,
  with `Connection: close`.
"""

from __future__ import annotations

import asyncio
import http
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.errors import problem
from worker.settings import Settings


def _problem_bytes(status: int, title: str, detail: str, slug: str) -> bytes:
    """A complete HTTP/1.1 problem response, for the protocol to write before it closes."""
    response = problem(status, title, detail, slug=slug)
    head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode("latin-1")]
    head += [name + b": " + value + b"\r\n" for name, value in response.raw_headers]
    head.append(b"connection: close\r\n\r\n")
    return b"".join(head) + bytes(response.body)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop httptools; `send_400_response` then answers 414/431."""


class _LingeringTransport:
    """The connection's transport as uvicorn's request cycle sees it: a close while the client is
    still sending its body becomes a lingering close (below), so the client reads the answer (a 413
    from the app) instead of a connection reset. Everything else goes to the real transport."""

    def __init__(self, transport: asyncio.Transport, protocol: LimitedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        if self._protocol.body_incomplete:
            self._protocol.linger()
        else:
            self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head and read timeouts (see the module)."""

    max_head_bytes: ClassVar[int]
    header_timeout: ClassVar[float]
    body_timeout: ClassVar[float]
    # After a refusal, what the client still sends is read and dropped this long before the connection
    # closes: closing a socket with unread input sends a reset, which can destroy the answer in flight.
    linger_seconds: ClassVar[float] = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # bytes received since the current request's head began
        self._head_size = 0  # its request line and complete headers, as parsed
        self._url_size = 0
        self._header_seen = False
        self._in_body = False
        self._discarding = False
        self._refusal: tuple[int, str, str, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    @property
    def body_incomplete(self) -> bool:
        return self._in_body

    # --- the connection and its bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _LingeringTransport(transport, self)  # type: ignore[assignment]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._in_body:
            self._arm_body_timer()
        else:
            # A new request on a kept-alive connection: its header clock starts at its first byte.
            if self._head_timer is None:
                self._arm_head_timer()
            self._head_bytes += len(data)
        super().data_received(data)
        if not self._in_body and not self._discarding and self._head_bytes > self.max_head_bytes:
            # httptools keeps an unfinished line or header to itself: bound what it may buffer.
            self._refuse(*self._head_refusal())

    def eof_received(self) -> None:
        # The client finished sending: during a lingering close nothing more is owed, so close now.
        if self._discarding:
            self.transport.close()

    # --- parser callbacks (httptools calls them from feed_data)

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        self._url_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_seen = True
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.max_head_bytes:
            self._refusal = self._head_refusal()
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head_size > self.max_head_bytes:
            self._refusal = self._head_refusal()
            raise _HeadTooLarge
        self._cancel_head_timer()
        self._in_body = True
        self._arm_body_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._header_seen = False
        self._head_bytes = 0
        self._head_size = 0
        self._url_size = 0
        self._cancel_body_timer()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to anything httptools refuses (a callback's exception included).
        detail = "the request is not valid HTTP/1.1 (request line, headers, Content-Length or chunk sizes)"
        refusal = self._refusal or (400, "Bad request", detail, "bad-request")
        self._refusal = None
        self._refuse(*refusal)

    def _head_refusal(self) -> tuple[int, str, str, str]:
        if self._header_seen and self._url_size <= self.max_head_bytes:
            detail = f"the request line and headers exceed {self.max_head_bytes} bytes"
            return 431, "Request headers too large", detail, "request-headers-too-large"
        detail = f"the request line exceeds {self.max_head_bytes} bytes"
        return 414, "Request line too long", detail, "request-line-too-long"

    # --- timers

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _arm_body_timer(self) -> None:
        self._cancel_body_timer()
        self._body_timer = self.loop.call_later(self.body_timeout, self._body_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_body or self._discarding or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # The previous request is still being answered (pipelining): its response comes first.
            self._arm_head_timer()
            return
        detail = f"the request line and headers did not arrive within {self.header_timeout:g} s"
        self._refuse(408, "Request timeout", detail, "request-timeout")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self._in_body or self._discarding or self.transport.is_closing():
            return
        if self.flow.read_paused:
            # uvicorn stopped reading because the app has not consumed the body yet: not the client's wait.
            self._arm_body_timer()
            return
        detail = f"no request body bytes arrived for {self.body_timeout:g} s"
        self._refuse(408, "Request timeout", detail, "request-timeout")

    # --- refusing

    def _refuse(self, status: int, title: str, detail: str, slug: str) -> None:
        """Answer with a problem (unless the app's answer has begun) and close, lingering."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(_problem_bytes(status, title, detail, slug))
        if cycle is not None and not cycle.response_complete:
            # The app (waiting for the rest of the body) sees a disconnect and sends nothing more.
            cycle.disconnected = True
            cycle.message_event.set()
        self.linger()

    def linger(self) -> None:
        """Half-close: the answer is sent and our side shut; what the client still sends is dropped
        until it stops or `linger_seconds` pass, then the connection closes."""
        if self._discarding:
            return
        self._discarding = True
        self._in_body = False
        self._cancel_timers()
        self.flow.resume_reading()
        transport: asyncio.Transport = self.transport._transport  # type: ignore[attr-defined]
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(self.linger_seconds, transport.close)


def protocol_for(settings: Settings) -> type[LimitedHttpToolsProtocol]:
    """The protocol class with this service's limits (uvicorn instantiates it once per connection)."""
    return type(
        "ServiceHttpProtocol",
        (LimitedHttpToolsProtocol,),
        {
            "max_head_bytes": settings.max_request_head_bytes,
            "header_timeout": settings.request_header_timeout_seconds,
            "body_timeout": settings.request_body_timeout_seconds,
        },
    )


def server_config(app: Any, settings: Settings, host: str, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for this app: our protocol, plus whatever `options` the caller adds."""
    return uvicorn.Config(app, host=host, port=port, http=protocol_for(settings), **options)
