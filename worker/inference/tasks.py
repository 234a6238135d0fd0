"""The Celery tasks the API waits on: `stylegan.render` on the inference queue.

Unlike jobs, these carry the whole request (no database row: a sampling request lives for milliseconds)
and their result goes back through the result backend, Redis at the broker's URL, set on these tasks
alone: the app's other tasks keep no results, and the API's sends subscribe to nothing (see
`worker.inference.client`). A request the model refuses comes back as {"error": {"field", "detail"}}
rather than as a task failure, so the API can answer 422 naming the field.

They are not acks_late: if the worker dies mid-request, the API has already answered 503 by the time
a redelivery could run, so a redelivered request would be work nobody waits for. Messages carry an
expiry for the same reason: a request still queued when the API gave up is dropped unread.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from worker.settings import Settings

if TYPE_CHECKING:
    from celery import Celery
    from celery.backends.redis import RedisBackend

    from worker.inference.batcher import MicroBatcher

log = logging.getLogger(__name__)

RENDER_TASK = "stylegan.render"
# Results are read within sample_timeout_seconds or never; an hour bounds what an abandoned one costs.
RESULT_EXPIRES_S = 3600


class NoResultBackend(RuntimeError):
    """Synchronous requests need a Redis broker (its URL doubles as the result backend)."""


def result_backend(app: Celery, settings: Settings) -> RedisBackend:
    """The Redis result backend at the broker's URL (the embedded Redis or the configured one)."""
    from celery.backends.redis import RedisBackend

    from worker.celery_app import broker_url

    url = broker_url(settings)
    if not url.startswith(("redis://", "rediss://")):
        raise NoResultBackend(
            f"synchronous sampling needs a Redis broker for its results; the broker is {url.split(':')[0]}://"
        )
    return RedisBackend(app=app, url=url, expires=RESULT_EXPIRES_S)


@functools.cache
def shared_batcher(settings: Settings) -> MicroBatcher:
    """This worker process's one batcher (one forward pass at a time on its device)."""
    from worker.inference.batcher import MicroBatcher

    return MicroBatcher(settings.max_batch, settings.inference_max_wait_ms / 1000.0)


def run_render(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    """The task body: the rendered image, or {"error": ...} for a request the model refuses."""
    from gan.errors import GanError
    from worker.inference.engine import shared_cache
    from worker.inference.render import RenderError, render

    try:
        return render(
            request, shared_cache(settings), shared_batcher(settings), settings.sample_timeout_seconds
        )
    except RenderError as exc:
        return {"error": {"field": exc.field, "detail": exc.message}}
    except GanError as exc:
        return {"error": {"field": "model", "detail": str(exc)}}


def register_inference_tasks(app: Celery, settings: Settings) -> None:
    """Add the synchronous tasks to `app` (called by `worker.celery_app.make_celery`)."""
    try:
        backend = result_backend(app, settings)
    except NoResultBackend as exc:
        log.warning("%s; synchronous sampling is off", exc)
        return

    @app.task(  # type: ignore[untyped-decorator]
        name=RENDER_TASK, acks_late=False, ignore_result=False, backend=backend, typing=False
    )
    def render_task(request: dict[str, Any]) -> dict[str, Any]:
        return run_render(settings, request)
