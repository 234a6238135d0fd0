"""One access line per request: method, route template, status and latency in milliseconds.

It replaces uvicorn's access log, which prints the raw path (ids, seeds and the query string, where a
client may put anything) rather than the route, and knows nothing of templates. The template is the
one Prometheus labels latency with (`api.metrics.route_template`), so a log line and a metric series
name a route alike: `GET /v1/models/{model_id}/images/{seed}.{format} 200 41.2ms`.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from uvicorn.config import LOGGING_CONFIG

ACCESS_LOGGER = "api.access"
log = logging.getLogger(ACCESS_LOGGER)


def log_access(method: str, route: str, status: int, seconds: float) -> None:
    """The line for one request (installed as an api.metrics.ObserveRequests observer)."""
    latency_ms = seconds * 1000.0
    log.info(
        "%s %s %d %.1fms",
        method,
        route,
        status,
        latency_ms,
        extra={"method": method, "route": route, "status": status, "latency_ms": latency_ms},
    )


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging setup plus ACCESS_LOGGER; pass it with access_log=False,
    so that each request is logged once, by log_access."""
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
