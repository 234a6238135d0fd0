"""The training job's pieces that need no training: the options it runs with, the provenance note of the
model it registers, and its callback's progress lines and cancel poll, on the embedded SQLite database."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import torch
from sqlalchemy.orm import Session, sessionmaker

from worker import jobs
from worker.db.migrate import upgrade_head
from worker.db.models import Dataset, JobEvent, Model
from worker.db.session import make_engine, make_session_factory
from worker.job_kinds import TrainingParams
from worker.settings import Settings
from worker.storage import LocalStorage
from worker.tasks.context import JobContext
from worker.tasks.training import (
    CANCEL_POLL_SECONDS,
    PROGRESS_SECONDS,
    JobTrainingCallback,
    provenance_note,
    training_options,
)

NVIDIA = "NVIDIA Source Code License for StyleGAN2 with Adaptive Discriminator Augmentation (ADA)"


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    upgrade_head(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def running_job(sessions: sessionmaker[Session], tmp_path: Path, clock: FakeClock) -> JobTrainingCallback:
    with sessions() as session:
        job = jobs.create_job(session, kind="probe", params={"seconds": 0.5})
        assert jobs.claim(session, job.id, "w1", lease_seconds=60) is not None
        job_id = job.id

    def report(progress: float, detail: Mapping[str, Any]) -> None:
        with sessions() as session:
            jobs.set_progress(session, job_id, "w1", progress, detail)

    ctx = JobContext(
        job_id=job_id,
        attempt=1,
        settings=Settings(data_dir=tmp_path),
        sessions=sessions,
        storage=LocalStorage(tmp_path / "files"),
        owner_key=None,
        device=torch.device("cpu"),
        report_progress=report,
    )
    return JobTrainingCallback(ctx, None, clock=clock)


def test_the_job_runs_with_the_api_defaults_and_frequent_progress(tmp_path: Path) -> None:
    spec = TrainingParams(dataset_id="d", base_model_id="m")
    options = training_options(
        spec, data=tmp_path / "d.zip", outdir=tmp_path / "run", resume=None, cond=False
    )
    # No channel override: a fine-tune's D is then sized from the base G (gan.training.loop).
    assert options.cbase is None and options.cmax is None
    assert options.progress_interval == PROGRESS_SECONDS <= 5
    assert (options.kimg, options.tick, options.preview_images, options.workers) == (1000.0, 4.0, 32, 0)


def test_provenance_names_base_and_dataset_and_keeps_the_base_licence() -> None:
    base = Model(id="b-1", name="ffhq-256", license_note=NVIDIA)
    dataset = Dataset(id="d-1", name="my cats")
    note = provenance_note(base, dataset, 1.024)
    assert note == (
        "Fine-tuned from ffhq-256 (b-1) on dataset my cats (d-1) for 1.024 kimg; base licence: " + NVIDIA
    )
    unlicensed = provenance_note(Model(id="b-2", name="mine", license_note=None), dataset, 0.5)
    assert unlicensed.endswith("for 0.500 kimg; base licence: none recorded")
    assert (
        provenance_note(None, dataset, 2) == "Trained from scratch on dataset my cats (d-1) for 2.000 kimg."
    )


def test_should_stop_reads_the_cancel_flag_at_most_every_poll_interval(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    clock = FakeClock()
    callback = running_job(sessions, tmp_path, clock)
    assert callback.should_stop() is False
    with sessions() as session:
        jobs.request_cancel(session, callback.ctx.job_id)
    clock.now += CANCEL_POLL_SECONDS / 2
    assert callback.should_stop() is False  # too soon to read the database again (it's asked every step)
    clock.now += CANCEL_POLL_SECONDS / 2
    assert callback.should_stop() is True and callback.ctx.cancel_event.is_set()
    clock.now += 0.001
    assert callback.should_stop() is True  # from the event now, without another read


def test_a_progress_line_between_ticks_updates_the_job_and_adds_an_event(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    callback = running_job(sessions, tmp_path, FakeClock())
    line = {
        "tick": 3,
        "images_seen": 640,
        "kimg": 0.64,
        "total_kimg": 2.0,
        "progress": 0.32,
        "sec_per_kimg": 100.0,
        "eta_seconds": 136.0,
    }
    callback.on_progress(line)
    with sessions() as session:
        job = jobs.get_job(session, callback.ctx.job_id)
        event = session.scalars(
            sa.select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.type == "progress")
        ).one()
    assert job.progress == pytest.approx(0.32)
    data = event.data
    assert data == {**data, "fraction": 0.32, "images_seen": 640, "kimg": 0.64, "total_kimg": 2.0}
    assert data["sec_per_kimg"] == 100.0 and data["eta_seconds"] == 136.0
    # tick stays None between ticks (clients tell tick ends by it); the tick under way is in_tick.
    assert data["tick"] is None and data["in_tick"] == 3
    assert job.progress_detail == {k: v for k, v in data.items() if k != "fraction"} | {"fraction": 0.32}
