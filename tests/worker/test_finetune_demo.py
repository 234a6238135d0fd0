"""A fine-tune of the bundled demo model with the options a training job builds from the API's defaults
(issue 8, part 3), on 100 generated 64 px images, asserting what is cheap to assert: D's size, checkpoint
size, progress before the first tick ends, a stop within one step, the preview grid, the provenance note.
scripts/measure_finetune.py times the same path; the README has its figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gan.io.checkpoint import inspect_network, load_generator
from gan.training import checkpoint as ck
from gan.training.dataset_prepare import prepare_dataset
from gan.training.loop import train
from worker.db.models import Dataset, Model
from worker.demo_model import bundled_demo_path
from worker.job_kinds import TrainingParams
from worker.tasks.training import provenance_note, training_options

pytestmark = pytest.mark.slow

MB = 2**20


class StopAfterProgress:
    """Records the run; asks to stop once `lines` progress lines have come within tick 1."""

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.progress: list[dict[str, Any]] = []
        self.ticks: list[dict[str, Any]] = []
        self.previews: list[Path] = []
        self.checkpoints: list[Path] = []

    def on_tick(self, stats: dict[str, Any]) -> None:
        self.ticks.append(stats)

    def on_progress(self, progress: dict[str, Any]) -> None:
        self.progress.append(progress)

    def on_preview(self, path: Path) -> None:
        self.previews.append(path)

    def on_checkpoint(self, path: Path, kimg: float, metrics: dict[str, float]) -> None:
        self.checkpoints.append(path)

    def should_stop(self) -> bool:
        return len([p for p in self.progress if p["tick"] == 1]) >= self.lines


def images(root: Path, count: int, resolution: int) -> Path:
    rng = np.random.RandomState(0)
    root.mkdir(parents=True)
    for i in range(count):
        pixels = rng.randint(0, 256, size=(resolution // 8, resolution // 8, 3)).astype(np.uint8)
        Image.fromarray(pixels).resize((resolution, resolution), Image.Resampling.BILINEAR).save(
            root / f"{i:03d}.png"
        )
    return root


def num_params(state: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() for k, v in state.items() if v.is_floating_point() and not k.endswith("w_avg"))


def test_demo_fine_tune_with_api_defaults(tmp_path: Path) -> None:
    demo = bundled_demo_path()
    assert demo is not None
    G_config = load_generator(demo).config
    resolution = G_config.img_resolution
    data = tmp_path / "data.zip"
    prepare_dataset(images(tmp_path / "images", 100, resolution), data, resolution)
    spec = TrainingParams(dataset_id="d", base_model_id="demo")  # every option at the API default
    options = training_options(spec, data=data, outdir=tmp_path / "run", resume=demo, cond=False)
    watcher = StopAfterProgress(lines=2)
    result = train(options, watcher)

    # D at the demo G's channel base and max, of the same order of parameters (the preset's: 23M).
    assert result.checkpoint is not None
    ckpt = ck.load_checkpoint(result.checkpoint)
    D_config, batch = ckpt.meta["D_config"], ckpt.meta["preset"]["batch"]
    assert (D_config["channel_base"], D_config["channel_max"]) == (
        G_config.synthesis.channel_base,
        G_config.synthesis.channel_max,
    )
    G_params, D_params = num_params(ckpt.module_state("G")), num_params(ckpt.module_state("D"))
    assert 0.2 < D_params / G_params < 5, (G_params, D_params)

    # Checkpoints (G, D, G_ema, both optimizers' moments) stay small: 288 MB with the preset's D.
    assert len(watcher.checkpoints) >= 2  # tick 0 and the stop
    assert all(path.stat().st_size < 20 * MB for path in watcher.checkpoints)

    # Progress lines came within the first full tick (4 kimg: 125 steps), which never ended; one may come
    # at tick 0 (the first step), ahead of its snapshot, when that step took over PROGRESS_SECONDS.
    assert [t["tick"] for t in watcher.ticks] == [0, 1]  # tick 0 is the first step; tick 1 ends at the stop
    assert [p["tick"] for p in watcher.progress if p["tick"] != 0] == [1, 1]
    assert len(watcher.progress) <= 3
    assert all(p["sec_per_kimg"] > 0 and p["eta_seconds"] > 0 for p in watcher.progress)
    assert watcher.ticks[-1]["kimg"] < 4.0

    # The stop was asked right after the second line; the run ended one step later, with a checkpoint.
    assert result.stopped
    assert round(result.kimg * 1000) == watcher.progress[-1]["images_seen"] + batch
    assert ckpt.meta["counters"]["cur_nimg"] == watcher.progress[-1]["images_seen"] + batch

    # Previews: 32 images (the API default) as a near-square 6x5 grid.
    for preview in watcher.previews:
        assert Image.open(preview).size == (6 * resolution, 5 * resolution)

    # The model such a job registers names its base and dataset and keeps the base's licence.
    licence = inspect_network(demo).license
    base = Model(id="demo-id", name="cartoon faces", license_note=licence)
    note = provenance_note(base, Dataset(id="d", name="blobs"), result.kimg)
    assert note.startswith(
        f"Fine-tuned from cartoon faces (demo-id) on dataset blobs (d) for {result.kimg:.3f}"
    )
    assert note.endswith(f"base licence: {licence}") and licence
