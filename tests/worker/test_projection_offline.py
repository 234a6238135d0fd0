"""A projection on a machine that cannot fetch NVIDIA's VGG16 file fails within seconds, and says which
settings fix it (STYLEGAN_VGG16_PATH, STYLEGAN_PROJECTION_DISTANCE), instead of hanging on a download."""

from __future__ import annotations

import hashlib
import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from gan.errors import GanError
from tests.api.test_projections_local import register_tiny_model
from worker import jobs
from worker.db.migrate import upgrade_head
from worker.db.models import Job
from worker.db.session import make_engine, make_session_factory
from worker.job_kinds import PROJECTION_UPLOAD_PREFIX
from worker.settings import Settings
from worker.storage import make_storage
from worker.tasks import projection
from worker.tasks.run import execute_job

# Well under the download timeout of the generic fetch (60 s): "fails fast" means this.
FAST_S = 5.0


@pytest.fixture
def closed_port() -> int:
    """A localhost port nobody listens on (bound, then closed: connecting is refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A localhost port that accepts connections (the kernel's backlog) and never answers: a
    black-holed network as a download sees it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _no_cached_vgg16() -> Iterator[None]:
    projection._vgg16.cache_clear()
    yield
    projection._vgg16.cache_clear()


def _settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"data_dir": data_dir, "broker_url": "redis://127.0.0.1:9/0", **overrides}
    return Settings(**values)  # type: ignore[arg-type]


def _assert_names_the_fix(message: str) -> None:
    assert "STYLEGAN_VGG16_PATH" in message and "STYLEGAN_PROJECTION_DISTANCE" in message, message


def test_an_unreachable_vgg16_url_fails_at_once_naming_the_settings(tmp_path: Path, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/vgg16.pt"
    settings = _settings(tmp_path, vgg16_url=url)
    started = time.monotonic()
    with pytest.raises(GanError) as caught:
        projection.perceptual_distance(settings)
    assert time.monotonic() - started < FAST_S
    _assert_names_the_fix(str(caught.value))
    assert url in str(caught.value)
    cache = tmp_path / "cache" / "detectors"
    assert not cache.exists() or list(cache.iterdir()) == [], "nothing half-downloaded is left behind"


def test_a_silent_server_is_given_up_after_the_short_timeout(
    tmp_path: Path, silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert projection.VGG16_DOWNLOAD_TIMEOUT_S <= 15, "a worker must not wait minutes on a dead network"
    monkeypatch.setattr(projection, "VGG16_DOWNLOAD_TIMEOUT_S", 0.5)
    settings = _settings(tmp_path, vgg16_url=f"http://127.0.0.1:{silent_port}/vgg16.pt")
    started = time.monotonic()
    with pytest.raises(GanError) as caught:
        projection.perceptual_distance(settings)
    assert time.monotonic() - started < FAST_S
    _assert_names_the_fix(str(caught.value))
    assert "timed out" in str(caught.value)


def test_a_missing_vgg16_path_is_named(tmp_path: Path) -> None:
    settings = _settings(tmp_path, vgg16_path=tmp_path / "nowhere" / "vgg16.pt")
    with pytest.raises(GanError) as caught:
        projection.perceptual_distance(settings)
    _assert_names_the_fix(str(caught.value))
    assert str(tmp_path / "nowhere" / "vgg16.pt") in str(caught.value)


def test_the_projection_job_fails_fast_with_that_message(tmp_path: Path, closed_port: int) -> None:
    settings = _settings(tmp_path, vgg16_url=f"http://127.0.0.1:{closed_port}/vgg16.pt")
    upgrade_head(settings.effective_database_url)
    model_id = register_tiny_model(settings, None)
    target = io.BytesIO()
    PIL.Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(target, format="PNG")
    data = target.getvalue()
    image_key = f"{PROJECTION_UPLOAD_PREFIX}/{hashlib.sha256(data).hexdigest()}.png"
    make_storage(settings).put_bytes(image_key, data)
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    with sessions() as session:
        job, _ = jobs.submit_job(
            session, kind="projection", params={"model_id": model_id, "image_key": image_key, "steps": 5}
        )

    started = time.monotonic()
    assert execute_job(settings, sessions, job.id, "test-worker") == "failed"
    assert time.monotonic() - started < FAST_S
    with sessions() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.state == "failed" and row.error is not None
        _assert_names_the_fix(row.error)
        assert row.attempts == 1, "a missing file is not retried"
