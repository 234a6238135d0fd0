"""`GET /metrics` in the Prometheus text format, one registry per app (tests build many apps).

- `stylegan_http_request_duration_seconds{method, route, status}`: latency by route *template*
  (`/v1/models/{model_id}/images/{seed}.{format}`), so the label set stays small whatever ids are asked;
- `stylegan_inference_batch_size`: the forward-pass size each synchronous image was rendered in, as the
  inference worker reported it (also the `X-Batch-Size` header);
- `stylegan_inference_phase_seconds{phase}`: where each synchronous image's time went (batch-wait,
  synthesis, encode, worker, broker, inference: `api.services.sampling.render_phases`);
- `stylegan_queue_depth{queue}` and `stylegan_jobs{state}`: read from the database at scrape time, since
  the database holds the truth for every process and machine (the broker only carries ids).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.db.models import JOB_STATES, Job
from worker.job_kinds import QUEUES

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
UNMATCHED_ROUTE = "<unmatched>"


class JobsCollector(Collector):
    """Queue depths and jobs by state, counted in the database when Prometheus scrapes."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "stylegan_queue_depth", "Jobs queued and not yet started, per queue.", labels=["queue"]
        )
        by_state = GaugeMetricFamily("stylegan_jobs", "Jobs in the database, per state.", labels=["state"])
        try:
            with self.sessions() as session:
                queued = dict(
                    session.execute(
                        sa.select(Job.queue, sa.func.count()).where(Job.state == "queued").group_by(Job.queue)
                    ).all()
                )
                states = dict(
                    session.execute(sa.select(Job.state, sa.func.count()).group_by(Job.state)).all()
                )
        except Exception:
            # A scrape must not fail because the database blinked; the gauges are left out this time.
            log.exception("metrics: could not count jobs")
            return
        for queue in QUEUES:
            depth.add_metric([queue], float(queued.get(queue, 0)))
        for state in JOB_STATES:
            by_state.add_metric([state], float(states.get(state, 0)))
        yield depth
        yield by_state


class Metrics:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.request_duration = Histogram(
            "stylegan_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "stylegan_inference_batch_size",
            "Rows in the forward pass each synchronous image was rendered in.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.phase_seconds = Histogram(
            "stylegan_inference_phase_seconds",
            "Where each synchronous image's time went (the phases of its Server-Timing header).",
            ["phase"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(JobsCollector(sessions))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The matched route's full template (`/v1/jobs/{job_id}`), `<unmatched>` when none matched.

    The router writes the matched route into the scope it was handed (this same dict), but a route of
    an included router knows only its own path (`/jobs/{job_id}`); the prefix is what the request path
    has in front of that path filled with the request's own parameters.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED_ROUTE
    request_path = str(scope.get("path", ""))
    try:
        tail = path.format(**{k: str(v) for k, v in scope.get("path_params", {}).items()})
    except (KeyError, IndexError, ValueError):
        return path
    if tail and request_path.endswith(tail):
        return request_path[: len(request_path) - len(tail)] + path
    return path


# (method, route template, status, seconds): what ObserveRequests reports for each request.
RequestObserver = Callable[[str, str, int, float], None]


class ObserveRequests:
    """Calls `observe(method, route template, status, seconds)` once per HTTP request, when its last
    body byte is sent (status 500 if the app failed). Prometheus latency and the access log
    (api/access_log.py) both hang off it, so they time and name a request alike."""

    def __init__(self, app: ASGIApp, observe: RequestObserver) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            method = str(scope.get("method", "?"))
            self.observe(method, route_template(scope), status, time.perf_counter() - started)


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"example": 'stylegan_jobs{state="queued"} 3.0\n'}}}},
)
def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI) -> None:
    """Add the registry, the latency middleware and the /metrics route (call from create_app)."""
    metrics_state = Metrics(app.state.session_factory)
    app.state.metrics = metrics_state

    def observe(method: str, route: str, status: int, seconds: float) -> None:
        metrics_state.request_duration.labels(method, route, str(status)).observe(seconds)

    app.add_middleware(ObserveRequests, observe=observe)
    app.include_router(router)


def observe_batch_size(app: Any, size: int) -> None:
    metrics_state: Metrics | None = getattr(app.state, "metrics", None)
    if metrics_state is not None:
        metrics_state.batch_size.observe(size)


def observe_phases(app: Any, phases: Mapping[str, float]) -> None:
    metrics_state: Metrics | None = getattr(app.state, "metrics", None)
    if metrics_state is not None:
        for phase, seconds in phases.items():
            metrics_state.phase_seconds.labels(phase).observe(seconds)
