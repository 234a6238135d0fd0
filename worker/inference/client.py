"""The API's side of a synchronous request: publish it on the inference queue, wait for its result.

The worker stores each result with Celery's Redis backend, which SETs the result key and PUBLISHes the
same value on a channel named after the key. The client learns of its results from that publish: each
client names its tasks `<prefix>-<uuid>` with a prefix of its own, and one listener thread per client
holds one pattern subscription to `celery-task-meta-<prefix>-*`, so it receives this client's results
and nobody else's (another API process has another prefix). A request thread waits on its own slot,
woken with the result in hand: no Redis command from the moment it publishes until it deletes the key.

Polling the key with GET (Celery's `get_task_meta`) stays as the fallback: every `_FALLBACK_POLL_S`
while the listener runs (a publish is lost if the subscription's connection drops and reconnects), and
at 2 ms backing off to 25 ms while no listener runs. Polling alone cost ~10 GETs per image at 16
clients, a fifth of the API's CPU (py-spy, bench/RESULTS.md "Service"). Celery's own pub/sub result
consumer is not used: it is one connection per process, not safe to share among the API's request
threads, and subscribing per send would leave unread messages piling up on it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from celery import Celery
from celery.backends.redis import RedisBackend
from pydantic import ValidationError
from redis.client import PubSub
from redis.exceptions import RedisError

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

log = logging.getLogger(__name__)

_FIRST_POLL_S = 0.002
_MAX_POLL_S = 0.025
# With the listener running a GET only catches a publish it missed: rare, so rarely worth a command.
_FALLBACK_POLL_S = 0.25
# How long the listener blocks on its socket per read, and waits after a broken connection.
_LISTEN_TIMEOUT_S = 1.0
_RECONNECT_PAUSE_S = 0.5


class InferenceTimeout(TimeoutError):
    """No inference worker answered within the timeout (none running, or all busy)."""


class InferenceFailed(RuntimeError):
    """The worker raised instead of answering (a bug or a lost device); the message says what."""


class _Slot:
    """Where the listener leaves one task's stored result (the raw value Celery published)."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.value: bytes | None = None


class ResultListener:
    """One pattern subscription to the result keys of the tasks whose ids start with `prefix`, read by a
    daemon thread that hands each published result to the request thread waiting for it."""

    def __init__(self, backend: RedisBackend, prefix: str) -> None:
        self._slots: dict[bytes, _Slot] = {}
        self._lock = threading.Lock()
        self._pubsub: PubSub = backend.client.pubsub(ignore_subscribe_messages=True)
        # Subscribed here, in the caller's thread, before any task of this prefix is published.
        self._pubsub.psubscribe(_key(backend, prefix) + b"*")
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference-results", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopped.is_set()

    def expect(self, key: bytes) -> _Slot:
        """Register before publishing the task, so that its result cannot arrive unclaimed."""
        slot = _Slot()
        with self._lock:
            self._slots[key] = slot
        return slot

    def forget(self, key: bytes) -> None:
        with self._lock:
            self._slots.pop(key, None)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=2 * _LISTEN_TIMEOUT_S)
        self._pubsub.close()

    def _run(self) -> None:
        lost = False  # said once per outage, not on every retry
        while not self._stopped.is_set():
            try:
                message = self._pubsub.get_message(timeout=_LISTEN_TIMEOUT_S)
            except (RedisError, OSError) as exc:
                # redis-py reconnects and re-subscribes on the next read, at once the first time and
                # after a pause while it keeps failing; a publish sent meanwhile is lost, and the
                # waiter's fallback GET finds that result.
                if lost:
                    self._stopped.wait(_RECONNECT_PAUSE_S)
                else:
                    log.warning("inference results: subscription lost (%s); reconnecting", exc)
                lost = True
                continue
            if lost:
                log.info("inference results: subscribed again")
                lost = False
            if message is not None and message.get("type") == "pmessage":
                self._deliver(message["channel"], message["data"])

    def _deliver(self, channel: bytes | str, data: Any) -> None:
        key = channel.encode() if isinstance(channel, str) else channel
        with self._lock:
            slot = self._slots.get(key)
        if slot is not None:
            slot.value = data
            slot.ready.set()


class InferenceClient:
    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._backend: RedisBackend | None = None
        self._listener: ResultListener | None = None
        self._listener_lock = threading.Lock()
        # Names this client's tasks, so that its subscription matches only its own results.
        self.prefix = f"render-{uuid.uuid4().hex[:12]}-"

    @property
    def backend(self) -> RedisBackend:
        if self._backend is None:
            self._backend = result_backend(self.app, self.settings)
        return self._backend

    def listener(self) -> ResultListener:
        """The running listener, started on first use (and again if it stopped)."""
        with self._listener_lock:
            if self._listener is None or not self._listener.running:
                self._listener = ResultListener(self.backend, self.prefix)
            return self._listener

    def close(self) -> None:
        with self._listener_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    def call(
        self, request: SampleRequest | WRequest | MixRequest | SefaRequest, timeout_s: float
    ) -> RenderedImage | FoundDirections | Refusal:
        """Send `request` and block until its reply; InferenceTimeout after `timeout_s`.

        Raises kombu's OperationalError (a broker it cannot reach) from the publish, and redis-py's
        errors from the subscription.
        """
        backend = self.backend
        listener = self.listener()
        task_id = self.prefix + str(uuid.uuid4())
        key = _key(backend, task_id)
        slot = listener.expect(key)
        deadline = time.monotonic() + timeout_s
        try:
            self._send(request, task_id, timeout_s)
            try:
                return self._wait(backend, listener, slot, task_id, deadline, timeout_s)
            finally:
                backend.client.delete(key)
        finally:
            listener.forget(key)

    def _send(
        self, request: SampleRequest | WRequest | MixRequest | SefaRequest, task_id: str, timeout_s: float
    ) -> None:
        self.app.send_task(
            RENDER_TASK,
            args=[request.model_dump(mode="json")],
            task_id=task_id,
            queue="inference",
            expires=timeout_s,
            retry=True,
            retry_policy={
                "max_retries": 2,
                "interval_start": 0,
                "interval_step": 0.2,
                "interval_max": 0.5,
            },
        )

    def _wait(
        self,
        backend: RedisBackend,
        listener: ResultListener,
        slot: _Slot,
        task_id: str,
        deadline: float,
        timeout_s: float,
    ) -> RenderedImage | FoundDirections | Refusal:
        delay = _FIRST_POLL_S
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise InferenceTimeout(f"no inference worker answered within {timeout_s:g} s")
            pause = _FALLBACK_POLL_S if listener.running else delay
            delay = min(delay * 2, _MAX_POLL_S)
            if slot.ready.wait(min(pause, deadline - now)) and slot.value is not None:
                # A state that is not final (none is published today) must not make the wait spin.
                slot.ready.clear()
                meta = backend.decode_result(slot.value)
            else:
                meta = backend.get_task_meta(task_id, cache=False)
            reply = _reply(meta)
            if reply is not None:
                return reply


def _key(backend: RedisBackend, task_id: str) -> bytes:
    """The Redis key (and channel) of a task's result, as bytes: the channel names redis-py reports."""
    key = backend.get_key_for_task(task_id)
    return key.encode() if isinstance(key, str) else bytes(key)


def _reply(meta: dict[str, Any]) -> RenderedImage | FoundDirections | Refusal | None:
    """The reply in a task's stored meta, None while it has none; InferenceFailed for a failure."""
    status = meta.get("status")
    if status == "SUCCESS":
        try:
            return RENDER_REPLY.validate_python(meta["result"])
        except ValidationError as exc:  # a worker of another version, or a bug
            raise InferenceFailed(f"the worker's reply is malformed: {exc}") from None
    if status == "FAILURE":
        raise InferenceFailed(str(meta.get("result")))
    return None
