"""The API's side of a synchronous request: publish it on the inference queue, wait for its result.

The result is polled from the Redis result backend with a plain GET (`get_task_meta`), never through
Celery's pub/sub result consumer: that consumer is one connection per process, not safe to share among
the API's request threads, and subscribing per send would leave unread messages piling up on it.
Polling starts at 2 ms and backs off to 25 ms, a small cost next to a forward pass.
"""

from __future__ import annotations

import time
import uuid

from celery import Celery
from celery.backends.redis import RedisBackend
from pydantic import ValidationError

from worker.inference.messages import (
    RENDER_REPLY,
    FoundDirections,
    MixRequest,
    Refusal,
    RenderedImage,
    SampleRequest,
    SefaRequest,
    WRequest,
)
from worker.inference.tasks import RENDER_TASK, result_backend
from worker.settings import Settings

_FIRST_POLL_S = 0.002
_MAX_POLL_S = 0.025


class InferenceTimeout(TimeoutError):
    """No inference worker answered within the timeout (none running, or all busy)."""


class InferenceFailed(RuntimeError):
    """The worker raised instead of answering (a bug or a lost device); the message says what."""


class InferenceClient:
    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._backend: RedisBackend | None = None

    @property
    def backend(self) -> RedisBackend:
        if self._backend is None:
            self._backend = result_backend(self.app, self.settings)
        return self._backend

    def call(
        self, request: SampleRequest | WRequest | MixRequest | SefaRequest, timeout_s: float
    ) -> RenderedImage | FoundDirections | Refusal:
        """Send `request` and block until its reply; InferenceTimeout after `timeout_s`.

        Raises kombu's OperationalError (a broker it cannot reach) from the publish.
        """
        backend = self.backend
        task_id = str(uuid.uuid4())
        deadline = time.monotonic() + timeout_s
        self.app.send_task(
            RENDER_TASK,
            args=[request.model_dump(mode="json")],
            task_id=task_id,
            queue="inference",
            expires=timeout_s,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        )
        key = backend.get_key_for_task(task_id)
        delay = _FIRST_POLL_S
        try:
            while True:
                meta = backend.get_task_meta(task_id, cache=False)
                status = meta.get("status")
                if status == "SUCCESS":
                    try:
                        return RENDER_REPLY.validate_python(meta["result"])
                    except ValidationError as exc:  # a worker of another version, or a bug
                        raise InferenceFailed(f"the worker's reply is malformed: {exc}") from None
                if status == "FAILURE":
                    raise InferenceFailed(str(meta.get("result")))
                now = time.monotonic()
                if now >= deadline:
                    raise InferenceTimeout(f"no inference worker answered within {timeout_s:g} s")
                time.sleep(min(delay, deadline - now))
                delay = min(delay * 2, _MAX_POLL_S)
        finally:
            backend.client.delete(key)
