"""The API's inference client against a real Redis: a result published by the backend wakes the waiting
request without a GET; a result whose publish was missed is still found by the fallback GET; a client
hears only its own tasks' results. The worker is stood in for by a thread that stores the result as
Celery's Redis backend does (SET and PUBLISH), so no model or worker process is needed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.backends.redis import RedisBackend
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from worker.celery_app import make_celery
from worker.inference import client as client_module
from worker.inference.client import InferenceClient, InferenceFailed, InferenceTimeout
from worker.inference.messages import ImageOptions, ModelRef, RenderedImage, SampleRequest
from worker.settings import Settings

REQUEST = SampleRequest(
    model=ModelRef(file_key="models/x.safetensors"), image=ImageOptions(), format="png", seed=1
)
REPLY = RenderedImage(data=b"\x89PNG image", content_type="image/png", batch_size=3, width=4, height=4)

# How a stand-in worker stores a task's result: the backend's `store_result` (SET + PUBLISH), or
# the SET alone (a publish the subscription missed).
Store = Callable[[RedisBackend, str, dict[str, Any]], None]


def published(backend: RedisBackend, task_id: str, result: dict[str, Any]) -> None:
    backend.store_result(task_id, result, "SUCCESS")


def set_only(backend: RedisBackend, task_id: str, result: dict[str, Any]) -> None:
    meta = backend._get_result_meta(result, "SUCCESS", None, None)
    backend.client.set(backend.get_key_for_task(task_id), backend.encode(meta))


@pytest.fixture
def client(tmp_path: Path, redis_url: str) -> Iterator[InferenceClient]:
    settings = Settings(data_dir=tmp_path, broker_url=redis_url, inference_device="cpu")
    inference = InferenceClient(make_celery(settings), settings)
    yield inference
    inference.close()


def answer_with(inference: InferenceClient, store: Store, delay_s: float = 0.05) -> list[str]:
    """Replace the publish with a thread that stores REPLY for the task after `delay_s`; the task ids."""
    sent: list[str] = []

    def send_task(name: str, *, task_id: str, **_: Any) -> None:
        sent.append(task_id)
        threading.Timer(delay_s, store, (inference.backend, task_id, REPLY.model_dump(mode="json"))).start()

    inference.app.send_task = send_task
    return sent


def count_gets(inference: InferenceClient) -> list[str]:
    gets: list[str] = []
    real = inference.backend.get_task_meta

    def get_task_meta(task_id: str, cache: bool = True) -> dict[str, Any]:
        gets.append(task_id)
        meta: dict[str, Any] = real(task_id, cache=cache)
        return meta

    inference.backend.get_task_meta = get_task_meta
    return gets


def test_a_published_result_wakes_the_request_without_polling(client: InferenceClient) -> None:
    sent = answer_with(client, published)
    gets = count_gets(client)
    started = time.monotonic()
    assert client.call(REQUEST, timeout_s=10) == REPLY
    assert time.monotonic() - started < client_module._FALLBACK_POLL_S  # woken, not found by a poll
    assert gets == []
    assert sent[0].startswith(client.prefix)
    # The key is deleted once read, and nothing is left waiting.
    assert client.backend.client.exists(client.backend.get_key_for_task(sent[0])) == 0
    assert client.listener()._slots == {}


def test_a_missed_publish_is_found_by_the_fallback_get(client: InferenceClient) -> None:
    answer_with(client, set_only)
    gets = count_gets(client)
    assert client.call(REQUEST, timeout_s=10) == REPLY
    assert len(gets) == 1  # one poll, at _FALLBACK_POLL_S


def test_polls_from_the_start_when_the_listener_is_not_running(
    client: InferenceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer_with(client, set_only)
    gets = count_gets(client)
    client.listener().close()
    monkeypatch.setattr(client, "listener", lambda: client._listener)
    started = time.monotonic()
    assert client.call(REQUEST, timeout_s=10) == REPLY
    assert time.monotonic() - started < client_module._FALLBACK_POLL_S  # the 2 ms.. 25 ms schedule
    assert len(gets) >= 2


def test_many_concurrent_requests_each_get_their_own_result(client: InferenceClient) -> None:
    answer_with(client, published, delay_s=0.02)
    replies: list[object] = []

    def one() -> None:
        replies.append(client.call(REQUEST, timeout_s=10))

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert replies == [REPLY] * 16


def test_a_client_hears_only_its_own_results(tmp_path: Path, redis_url: str) -> None:
    settings = Settings(data_dir=tmp_path, broker_url=redis_url, inference_device="cpu")
    mine, other = (
        InferenceClient(make_celery(settings), settings),
        InferenceClient(make_celery(settings), settings),
    )
    try:
        heard: list[object] = []
        listener = mine.listener()
        real = listener._deliver

        def deliver(channel: bytes | str, data: Any) -> None:
            heard.append(channel)
            real(channel, data)

        listener._deliver = deliver  # type: ignore[method-assign]
        answer_with(other, published)
        assert other.call(REQUEST, timeout_s=10) == REPLY
        assert heard == []
    finally:
        mine.close()
        other.close()


def test_failure_and_timeout(client: InferenceClient) -> None:
    def failed(backend: RedisBackend, task_id: str, result: dict[str, Any]) -> None:
        backend.store_result(task_id, RuntimeError("device lost"), "FAILURE")

    answer_with(client, failed)
    with pytest.raises(InferenceFailed, match="device lost"):
        client.call(REQUEST, timeout_s=10)
    client.app.send_task = lambda *a, **k: None
    with pytest.raises(InferenceTimeout):
        client.call(REQUEST, timeout_s=0.3)


def test_the_listener_subscribes_again_after_its_connection_drops(client: InferenceClient) -> None:
    listener = client.listener()
    redis_client = client.backend.client
    assert redis_client.client_kill_filter(_type="pubsub") == 1
    deadline = time.monotonic() + 10
    while redis_client.pubsub_numpat() == 0:  # redis-py reconnects and psubscribes again
        assert time.monotonic() < deadline, "the listener did not subscribe again"
        time.sleep(0.05)
    assert client.listener() is listener and listener.running
    answer_with(client, published)
    gets = count_gets(client)
    assert client.call(REQUEST, timeout_s=10) == REPLY
    assert gets == []


def test_an_unreachable_broker_raises_what_the_api_answers_503_for(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:9/0", inference_device="cpu")
    inference = InferenceClient(make_celery(settings), settings)
    started = time.monotonic()
    with pytest.raises((RedisError, OperationalError)):  # api/services/sampling.ask_inference's 503
        inference.call(REQUEST, timeout_s=10)
    assert time.monotonic() - started < 5
