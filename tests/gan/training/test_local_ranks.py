"""`train_on_local_ranks`: this process is rank 0 and keeps its callback (which could not be pickled into
a spawned rank), rank 1 is a child process, gloo on CPU; the result matches one process, a stop asked by
rank 0's callback stops every rank, and an error in rank 0 leaves no child behind."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from train_helpers import tiny_options, write_image_folder

from gan.errors import ConfigError
from gan.training import checkpoint as ck
from gan.training.local_ranks import device_kind, train_on_local_ranks
from gan.training.loop import train
from gan.training.options import TrainOptions


class Recorder:
    """A callback with a lock in it: it cannot be pickled, so it must run in this process."""

    def __init__(self, stop_after_ticks: int | None = None, fail_on_checkpoint: bool = False) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.ticks: list[dict[str, Any]] = []
        self.checkpoints: list[Path] = []
        self.previews: list[Path] = []
        self.stop_after_ticks = stop_after_ticks
        self.fail_on_checkpoint = fail_on_checkpoint

    def on_tick(self, stats: dict[str, Any]) -> None:
        assert os.getpid() == self.pid
        with self.lock:
            self.ticks.append(stats)

    def on_progress(self, progress: dict[str, Any]) -> None:
        assert os.getpid() == self.pid

    def on_preview(self, path: Path) -> None:
        self.previews.append(path)

    def on_checkpoint(self, path: Path, kimg: float, metrics: dict[str, float]) -> None:
        if self.fail_on_checkpoint:
            raise RuntimeError("lease lost (test)")
        self.checkpoints.append(path)

    def should_stop(self) -> bool:
        return self.stop_after_ticks is not None and len(self.ticks) >= self.stop_after_ticks


def test_options_round_trip_through_json(tmp_path: Path) -> None:
    options = tiny_options(
        tmp_path, tmp_path / "out", gpus=2, metrics=("fid50k_full",), resume=tmp_path / "r"
    )
    assert TrainOptions.from_dict(options.to_dict()) == options


def test_two_local_ranks_train_what_one_process_trains_and_report_in_this_process(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "data")
    common = dict(cfg="cifar", batch=4, batch_gpu=2, use_noise=False, kimg=0.016, snap=1)
    single = train(tiny_options(data, tmp_path / "one", **common))
    recorder = Recorder()
    start = time.monotonic()
    two = train_on_local_ranks(tiny_options(data, tmp_path / "two", gpus=2, **common), recorder)
    seconds = time.monotonic() - start
    assert two.world_size == 2 and single.world_size == 1
    assert two.kimg == single.kimg and not two.stopped
    assert len(recorder.ticks) == single.ticks >= 2
    assert recorder.checkpoints and recorder.checkpoints[-1] == two.checkpoint and recorder.previews
    a, b = ck.load_checkpoint(single.checkpoint), ck.load_checkpoint(two.checkpoint)  # type: ignore[arg-type]
    assert a.meta["counters"] == b.meta["counters"]
    worst = max(
        (value - b.tensors[key]).abs().max().item()
        for key, value in a.tensors.items()
        if value.is_floating_point() and not key.endswith("w_avg")
    )
    print(
        f"2 local ranks: {seconds:.1f} s, {len(recorder.ticks)} ticks, worst abs diff to 1 process {worst:.3g}"
    )
    assert worst < 1e-5


def test_a_stop_from_rank_0_stops_every_rank(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "data")
    recorder = Recorder(stop_after_ticks=1)
    result = train_on_local_ranks(tiny_options(data, tmp_path / "run", gpus=2, kimg=10), recorder)
    assert result.stopped and result.kimg < 1 and result.checkpoint is not None
    print(f"stopped at {result.kimg:.3f} kimg after {len(recorder.ticks)} tick(s)")


def test_an_error_in_rank_0_kills_the_other_ranks(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "data")
    before = set(_children())
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="lease lost"):
        train_on_local_ranks(
            tiny_options(data, tmp_path / "run", gpus=2, kimg=10), Recorder(fail_on_checkpoint=True)
        )
    assert set(_children()) == before  # rank 1 is gone, not left waiting in an all-reduce
    print(f"rank 0 failed and rank 1 was reaped in {time.monotonic() - start:.1f} s")


def test_more_cuda_ranks_than_devices_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gpus 4096: this host has"):
        device_kind(tiny_options(tmp_path, tmp_path / "x", gpus=4096, batch=4096, device="cuda"))
    assert device_kind(tiny_options(tmp_path, tmp_path / "x", gpus=2, device="cpu")) == "cpu"


def _children() -> list[int]:
    path = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []
