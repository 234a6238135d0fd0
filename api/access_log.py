"""One access line per request: method, route template, status and latency in milliseconds.

It replaces uvicorn's access log, which prints the raw path (ids, seeds and the query string, where a
client may put anything) rather than the route, and knows nothing of templates. The template is the
one Prometheus labels latency with (`api.metrics.route_template`), so a log line and a metric series
name a route alike: `GET /v1/models/{model_id}/images/{seed}.{format} 200 41.2ms`.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import LOGGING_CONFIG

from api.metrics import route_template

ACCESS_LOGGER = "api.access"
log = logging.getLogger(ACCESS_LOGGER)


class AccessLogMiddleware:
    """Writes the line once the response's last byte is sent (or the app failed: status 500)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            method = str(scope.get("method", "?"))
            template = route_template(scope)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            log.info(
                "%s %s %d %.1fms",
                method,
                template,
                status,
                elapsed_ms,
                extra={"method": method, "route": template, "status": status, "latency_ms": elapsed_ms},
            )


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging setup plus ACCESS_LOGGER; pass it with access_log=False,
    so that each request is logged once, by AccessLogMiddleware."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    # Where uvicorn's access lines went (stdout), in its plain format (its access formatter expects the
    # client address and request line as arguments).
    config["handlers"]["api_access"] = {
        "formatter": "default",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stdout",
    }
    config["loggers"][ACCESS_LOGGER] = {"handlers": ["api_access"], "level": "INFO", "propagate": False}
    return config
