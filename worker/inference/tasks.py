"""The Celery tasks the API waits on: `stylegan.render` on the inference queue.

Unlike jobs, these carry the whole request (no database row: a sampling request lives for milliseconds)
and their result goes back through the result backend, Redis at the broker's URL, set on these tasks
alone: the app's other tasks keep no results, and the API's sends subscribe to nothing (see
`worker.inference.client`). The request is one of `worker.inference.messages`' models, validated here
at the boundary; a request that fails that check, or that the model refuses, comes back as a `Refusal`
naming the field rather than as a task failure, so the API can answer 422 naming it.

They are not acks_late: if the worker dies mid-request, the API has already answered 503 by the time
a redelivery could run, so a redelivered request would be work nobody waits for. Messages carry an
expiry for the same reason: a request still queued when the API gave up is dropped unread.

Their result is an encoded image (base64, tens of kilobytes). Celery logs every success as "Task ...
succeeded in ...s: <repr of the result>" (`celery.app.trace.LOG_SUCCESS`), which would write each
image into the worker's log; `OmitResult` keeps that line but drops the result from it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.app.trace import LOG_SUCCESS
from celery.backends.redis import RedisBackend
from pydantic import ValidationError

from gan.errors import GanError
from worker.inference.batcher import MicroBatcher
from worker.inference.engine import shared_cache
from worker.inference.messages import (
    RENDER_REQUEST,
    FoundDirections,
    Refusal,
    RenderedImage,
    SefaRequest,
    refusal_from,
)
from worker.inference.render import RenderError, find_sefa, render
from worker.settings import Settings

log = logging.getLogger(__name__)

RENDER_TASK = "stylegan.render"
# Results are read within sample_timeout_seconds or never; an hour bounds what an abandoned one costs.
RESULT_EXPIRES_S = 3600


# The logger Celery writes task outcomes to (`celery.app.trace`).
TRACE_LOGGER = "celery.app.trace"
LOG_SUCCESS_WITHOUT_RESULT = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"


class OmitResult(logging.Filter):
    """Drops the return value from Celery's success line for `task_names` (their results are images).

    A filter on the trace logger rather than a task option: `resultrepr_maxsize` only shortens the
    repr, so a kilobyte of base64 would still reach the log on every request.
    """

    def __init__(self, task_names: frozenset[str]) -> None:
        super().__init__()
        self.task_names = task_names

    def filter(self, record: logging.LogRecord) -> bool:
        context = record.args
        if (
            record.msg == LOG_SUCCESS
            and isinstance(context, Mapping)
            and context.get("name") in self.task_names
        ):
            kept = {key: value for key, value in context.items() if key != "return_value"}
            record.msg = LOG_SUCCESS_WITHOUT_RESULT
            record.args = kept
            # Celery also passes the context as `extra={"data": ...}` for structured handlers.
            if isinstance(getattr(record, "data", None), Mapping):
                record.data = kept
        return True


def omit_render_results_from_logs() -> None:
    """Install OmitResult for RENDER_TASK once per process (make_celery runs for each app built)."""
    trace_logger = logging.getLogger(TRACE_LOGGER)
    if not any(isinstance(f, OmitResult) for f in trace_logger.filters):
        trace_logger.addFilter(OmitResult(frozenset({RENDER_TASK})))


class NoResultBackend(RuntimeError):
    """Synchronous requests need a Redis broker (its URL doubles as the result backend)."""


def result_backend(app: Celery, settings: Settings) -> RedisBackend:
    """The Redis result backend at the broker's URL (the embedded Redis or the configured one)."""
    url = settings.resolved_broker_url()
    if not url.startswith(("redis://", "rediss://")):
        raise NoResultBackend(
            f"synchronous sampling needs a Redis broker for its results; the broker is {url.split(':')[0]}://"
        )
    return RedisBackend(app=app, url=url, expires=RESULT_EXPIRES_S)


@functools.cache
def shared_batcher(settings: Settings) -> MicroBatcher:
    """This worker process's one batcher (one forward pass at a time on its device)."""
    return MicroBatcher(settings.max_batch, settings.inference_max_wait_ms / 1000.0)


def run_render(settings: Settings, payload: dict[str, Any]) -> RenderedImage | FoundDirections | Refusal:
    """The task body: the rendered image (or a model's SeFa directions), or a Refusal for a request that
    is malformed or that the model refuses."""
    try:
        request = RENDER_REQUEST.validate_python(payload)
    except ValidationError as exc:
        return refusal_from(exc)
    try:
        if isinstance(request, SefaRequest):
            return find_sefa(request, shared_cache(settings))
        return render(
            request, shared_cache(settings), shared_batcher(settings), settings.sample_timeout_seconds
        )
    except RenderError as exc:
        return Refusal(field=exc.field, detail=exc.message)
    except GanError as exc:  # a model file that is missing or does not load
        return Refusal(field="model", detail=str(exc))


def register_inference_tasks(app: Celery, settings: Settings) -> None:
    """Add the synchronous tasks to `app` (called by `worker.celery_app.make_celery`)."""
    try:
        backend = result_backend(app, settings)
    except NoResultBackend as exc:
        log.warning("%s; synchronous sampling is off", exc)
        return
    omit_render_results_from_logs()

    @app.task(  # type: ignore[untyped-decorator]
        name=RENDER_TASK,
        shared=False,  # this app's settings only (see worker/celery_app.make_celery)
        acks_late=False,
        ignore_result=False,
        backend=backend,
        typing=False,
        # Task events (`task-succeeded`, for Flower) carry the result's repr too: keep it to a stub.
        resultrepr_maxsize=0,
    )
    def render_task(request: dict[str, Any]) -> dict[str, Any]:
        # The result backend stores JSON; the API reads it back with RENDER_REPLY.
        return run_render(settings, request).model_dump(mode="json")
