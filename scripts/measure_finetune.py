"""Measure a fine-tune of the bundled demo model as the API runs it, on this machine.

The run goes through the training job's own options (`worker.tasks.training.training_options` with a
`TrainingParams` holding only what a user must give, so every other value is the API default) and the
library `train()` the job calls, on 100 generated 64 px images prepared as an uploaded dataset is. Two
runs:

1. `--kimg` (default 1) to the end: wall time, seconds to the first progress line (a tick end or a
   within-tick line, counted from the job handler's start, dataset and model already local), speed,
   checkpoint sizes, D and G parameter counts, the preview grid's shape, the provenance note;
2. the API's default length, stopped by a request made `--cancel-after` seconds in, from a timer thread
   (so it falls anywhere in a step): from the request to `train()` returning with its final checkpoint.
   In a job the request reaches `should_stop` through a database read made at most every
   CANCEL_POLL_SECONDS, which the report adds for the worst case.

With `--preset-d-steps N`, also N steps with D at the `auto` preset's channels (what a fine-tune built
before D was sized from G) for comparison.

Prints one JSON object. The figures depend on the machine and on what else runs on it: say so with them.

    .venv/bin/python scripts/measure_finetune.py [--kimg 1] [--cancel-after 20] [--preset-d-steps 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gan.io.checkpoint import load_generator
from gan.training import checkpoint as ckpt_io
from gan.training.dataset_prepare import prepare_dataset
from gan.training.loop import train
from gan.training.presets import make_preset
from worker.db.models import Dataset, Model
from worker.demo_model import bundled_demo_path
from worker.job_kinds import TrainingParams
from worker.tasks.training import CANCEL_POLL_SECONDS, provenance_note, training_options


def write_images(root: Path, count: int, resolution: int, seed: int = 0) -> Path:
    """Smooth colour blobs on a grey ground, one PNG each (generated: nothing is downloaded)."""
    rng = np.random.RandomState(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:resolution, 0:resolution] / resolution
    for i in range(count):
        colour = rng.uniform(0, 255, size=3)
        cx, cy = rng.uniform(0.2, 0.8, size=2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) * 20)[..., None]
        image = (blob * colour + (1 - blob) * 40).clip(0, 255).astype(np.uint8)
        Image.fromarray(image, "RGB").save(root / f"{i:04d}.png")
    return root


class Meter:
    """A training callback that records when things happen; stops once `stop` is set."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.stop = threading.Event()
        self.stop_requested: float | None = None
        self.progress: list[tuple[float, dict[str, Any]]] = []  # (seconds since start, line)
        self.ticks: list[tuple[float, dict[str, Any]]] = []
        self.checkpoints: list[tuple[Path, int]] = []
        self.previews: list[Path] = []

    def on_tick(self, stats: dict[str, Any]) -> None:
        self.ticks.append((time.monotonic() - self.start, stats))

    def on_progress(self, progress: dict[str, Any]) -> None:
        self.progress.append((time.monotonic() - self.start, progress))

    def on_preview(self, path: Path) -> None:
        self.previews.append(path)

    def on_checkpoint(self, path: Path, kimg: float, metrics: dict[str, float]) -> None:
        self.checkpoints.append((path, path.stat().st_size))

    def request_stop(self) -> None:
        self.stop_requested = time.monotonic()
        self.stop.set()

    def should_stop(self) -> bool:
        return self.stop.is_set()


def num_params(state: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() for k, v in state.items() if v.is_floating_point() and not k.endswith("w_avg"))


def measure(work: Path, kimg: float, cancel_after: float, preset_d_steps: int) -> dict[str, Any]:
    demo = bundled_demo_path()
    if demo is None:
        raise SystemExit("no bundled demo model under worker/assets/demo")
    resolution = load_generator(demo).config.img_resolution
    images = write_images(work / "images", 100, resolution)
    data = work / "dataset.zip"
    prepare_dataset(images, data, resolution)  # as an upload is prepared (uncompressed PNGs)

    # Only what a user must give; everything else is TrainingParams' (the API's) default.
    spec = TrainingParams(dataset_id="measure", base_model_id="demo", kimg=kimg)
    options = training_options(spec, data=data, outdir=work / "run", resume=demo, cond=False)
    start = time.monotonic()
    meter = Meter(start)
    result = train(options, meter)
    wall = time.monotonic() - start
    assert result.checkpoint is not None
    final = ckpt_io.load_checkpoint(result.checkpoint)
    first = min([t for t, _ in meter.progress] + [t for t, _ in meter.ticks])
    grid = Image.open(meter.previews[-1]).size
    base = Model(id="demo", name="demo model", license_note="Apache-2.0 (the bundled demo)")
    dataset = Dataset(id="measure", name="100 generated images")

    # The cancel run: the API's default length, stopped part-way.
    default_spec = TrainingParams(dataset_id="measure", base_model_id="demo")
    cancel_options = training_options(
        default_spec, data=data, outdir=work / "cancel", resume=demo, cond=False
    )
    cancel_meter = Meter(time.monotonic())
    timer = threading.Timer(cancel_after, cancel_meter.request_stop)
    timer.start()
    stopped = train(cancel_options, cancel_meter)
    returned = time.monotonic()
    timer.cancel()
    assert stopped.stopped and cancel_meter.stop_requested is not None
    stop_sec = returned - cancel_meter.stop_requested
    steps_done = result.kimg * 1000 / final.meta["preset"]["batch"]

    comparison: dict[str, Any] | None = None
    if preset_d_steps:
        preset = make_preset("auto", resolution)
        wide = TrainingParams(
            dataset_id="measure",
            base_model_id="demo",
            kimg=preset_d_steps * preset.batch / 1e3,
            cbase=preset.channel_base,
            cmax=preset.channel_max,
        )
        wide_options = training_options(wide, data=data, outdir=work / "preset-d", resume=demo, cond=False)
        wide_meter = Meter(time.monotonic())
        wide_result = train(wide_options, wide_meter)
        assert wide_result.checkpoint is not None
        wide_ckpt = ckpt_io.load_checkpoint(wide_result.checkpoint)
        # Tick 0 is the first step alone; the final tick holds the others (setup and the first step's
        # extra regularisation phases left out).
        last = wide_meter.ticks[-1][1]
        comparison = {
            "D_channel_base_max": [preset.channel_base, preset.channel_max],
            "D_params": num_params(wide_ckpt.module_state("D")),
            "steps": preset_d_steps,
            "sec_per_kimg_after_first_step": round(last["sec_per_kimg"], 1),
            "checkpoint_mb": round(wide_result.checkpoint.stat().st_size / 2**20, 2),
        }

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), shared",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "options": {
            k: options.to_dict()[k] for k in ("cfg", "kimg", "batch", "aug", "tick", "snap", "preview_images")
        },
        "batch": final.meta["preset"]["batch"],
        "G_params": num_params(final.module_state("G")),
        "D_params": num_params(final.module_state("D")),
        "D_channel_base_max": [final.meta["D_config"]["channel_base"], final.meta["D_config"]["channel_max"]],
        "kimg_done": result.kimg,
        "wall_sec": round(wall, 1),
        "sec_per_kimg_overall": round(wall / result.kimg, 1),
        "sec_per_step_mean": round(wall / steps_done, 2),
        "sec_per_kimg_last_tick": round(meter.ticks[-1][1]["sec_per_kimg"], 1),
        "first_progress_sec": round(first, 1),
        "progress_lines": len(meter.progress),
        "ticks": len(meter.ticks),
        "checkpoint_mb_max": round(max(size for _, size in meter.checkpoints) / 2**20, 2),
        "preview_px": list(grid),
        "preview_grid": [grid[0] // resolution, grid[1] // resolution],
        "provenance_example": provenance_note(base, dataset, result.kimg),
        "cancel": {
            "requested_after_sec": cancel_after,
            "kimg_at_stop": stopped.kimg,
            "stop_to_return_sec": round(stop_sec, 2),
            "plus_db_poll_worst_case_sec": round(stop_sec + CANCEL_POLL_SECONDS, 2),
            "final_checkpoint_kimg": ckpt_io.load_checkpoint(stopped.checkpoint).meta["kimg"]
            if stopped.checkpoint
            else None,
        },
        "preset_d": comparison,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kimg", type=float, default=1.0, help="length of the timed run (default 1)")
    parser.add_argument("--cancel-after", type=float, default=20.0, help="seconds before the stop request")
    parser.add_argument(
        "--preset-d-steps", type=int, default=0, help="also time N steps with the preset's D (default 0: no)"
    )
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        report = measure(args.out, args.kimg, args.cancel_after, args.preset_d_steps)
    else:
        with tempfile.TemporaryDirectory(prefix="measure-finetune-") as tmp:
            report = measure(Path(tmp), args.kimg, args.cancel_after, args.preset_d_steps)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
