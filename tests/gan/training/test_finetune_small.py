"""Fine-tuning a small generator-only file on one machine (issue 8, part 3): D is sized like the base G
unless asked otherwise, progress comes between ticks, a stop takes effect within one step, and preview
grids are near-square. 16 px networks, seconds each on CPU."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from train_helpers import tiny_options, write_image_folder

from gan.generator import build_generator
from gan.io.checkpoint import save_generator
from gan.training import checkpoint as ck
from gan.training.loop import train
from gan.training.presets import make_preset
from gan.training.progress import grid_shape


class Watcher:
    """Records what the loop reports; stops at its `stop_at_call`-th should_stop call."""

    def __init__(self, stop_at_call: int | None = None) -> None:
        self.stop_at_call = stop_at_call
        self.stop_calls = 0
        self.ticks: list[dict[str, Any]] = []
        self.progress: list[dict[str, Any]] = []
        self.checkpoints: list[Path] = []
        self.order: list[tuple[str, int]] = []  # (what, images seen), as reported

    def on_tick(self, stats: dict[str, Any]) -> None:
        self.ticks.append(stats)
        self.order.append(("tick", round(stats["kimg"] * 1000)))

    def on_progress(self, progress: dict[str, Any]) -> None:
        self.progress.append(progress)
        self.order.append(("progress", progress["images_seen"]))

    def on_preview(self, path: Path) -> None:
        """Previews are not what these tests look at."""

    def on_checkpoint(self, path: Path, kimg: float, metrics: dict[str, float]) -> None:
        self.checkpoints.append(path)

    def should_stop(self) -> bool:
        self.stop_calls += 1
        return self.stop_calls == self.stop_at_call


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("data") / "set")


@pytest.fixture(scope="module")
def small_generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16 px generator file in our format (G only, like every stored model and the demo), at channel
    base 256 and max 16, far below the stylegan2 preset's 32768 and 512."""
    preset = make_preset("stylegan2", 16).replace(
        channel_base=256, channel_max=16, map_layers=2, z_dim=16, w_dim=16, num_fp16_res=0, conv_clamp=None
    )
    torch.manual_seed(0)
    G = build_generator(preset.generator_config(16, 0, 3))
    return save_generator(G, tmp_path_factory.mktemp("base") / "small.safetensors")


def num_params(state: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() for k, v in state.items() if v.is_floating_point() and not k.endswith("w_avg"))


def test_a_fine_tune_builds_D_at_the_base_generators_channel_base_and_max(
    data: Path, small_generator: Path, tmp_path: Path
) -> None:
    # cbase/cmax None: what the API sends unless the request sets them.
    options = tiny_options(data, tmp_path / "ft", resume=small_generator, cbase=None, cmax=None, kimg=0.004)
    result = train(options)
    assert result.checkpoint is not None
    ckpt = ck.load_checkpoint(result.checkpoint)
    D_config = ckpt.meta["D_config"]
    assert (D_config["channel_base"], D_config["channel_max"]) == (256, 16)
    # The stored preset agrees with the D it built, so a resumed run reads one story.
    assert (ckpt.meta["preset"]["channel_base"], ckpt.meta["preset"]["channel_max"]) == (256, 16)
    G_params, D_params = num_params(ckpt.module_state("G")), num_params(ckpt.module_state("D"))
    # Same order as G (the preset's D at 512 channels would be about 10M parameters, ~200x G).
    assert 0.2 < D_params / G_params < 5, (G_params, D_params)


def test_cbase_and_cmax_given_with_a_fine_tune_size_D_instead(
    data: Path, small_generator: Path, tmp_path: Path
) -> None:
    options = tiny_options(data, tmp_path / "ft", resume=small_generator, cbase=512, cmax=32, kimg=0.004)
    ckpt = ck.load_checkpoint(train(options).checkpoint)  # type: ignore[arg-type]
    assert (ckpt.meta["D_config"]["channel_base"], ckpt.meta["D_config"]["channel_max"]) == (512, 32)
    G_synthesis = ckpt.meta["G_config"]["synthesis"]
    assert (G_synthesis["channel_base"], G_synthesis["channel_max"]) == (256, 16)  # G is the file's


def test_progress_lines_come_between_ticks_with_speed_and_eta(data: Path, tmp_path: Path) -> None:
    # Ticks end at nimg 4 (the first step) and 20; the run ends at 24; snapshots at ticks 0 and the end.
    watcher = Watcher()
    options = tiny_options(data, tmp_path / "run", tick=0.016, kimg=0.024, progress_interval=0.0)
    train(options, watcher)
    assert [t["kimg"] for t in watcher.ticks] == pytest.approx([0.004, 0.020, 0.024])
    # Lines within tick 1, before it ends; and one at tick 0, ahead of its snapshot and tick line.
    assert [(p["tick"], p["images_seen"]) for p in watcher.progress] == [(0, 4), (1, 8), (1, 12), (1, 16)]
    assert watcher.order[:2] == [("progress", 4), ("tick", 4)]
    for line in watcher.progress:
        assert line["total_kimg"] == pytest.approx(0.024)
        assert line["kimg"] == line["images_seen"] / 1000 and line["progress"] == line["images_seen"] / 24
        assert line["sec_per_kimg"] > 0
        assert line["eta_seconds"] == pytest.approx((24 - line["images_seen"]) / 1000 * line["sec_per_kimg"])

    # The interval throttles: an hour between lines gives none in a run of seconds.
    quiet = Watcher()
    train(tiny_options(data, tmp_path / "quiet", tick=0.016, kimg=0.024, progress_interval=3600.0), quiet)
    assert quiet.progress == [] and len(quiet.ticks) == 3


def test_a_stop_takes_effect_after_the_step_it_was_asked_at_with_a_final_checkpoint(
    data: Path, tmp_path: Path
) -> None:
    # One tick for the whole run apart from tick 0: a stop at a tick end would come only at the end.
    watcher = Watcher(stop_at_call=3)
    result = train(tiny_options(data, tmp_path / "run", tick=1.0, kimg=0.032, snap=100), watcher)
    assert watcher.stop_calls == 3  # asked after every step: nimg 4, 8, 12
    assert result.stopped and result.kimg == pytest.approx(0.012)
    assert result.checkpoint is not None and watcher.checkpoints[-1] == result.checkpoint
    assert ck.load_checkpoint(result.checkpoint).meta["counters"]["cur_nimg"] == 12
    assert watcher.ticks[-1]["kimg"] == pytest.approx(0.012)


@pytest.mark.parametrize(
    ("resolution", "limit", "expected"),
    [
        (64, 32, (6, 5)),  # the API default: was 32x1
        (64, 64, (8, 8)),
        (16, 8, (4, 2)),
        (32, 2, (2, 1)),
        (1024, 64, (7, 4)),  # the official grid is already smaller than the limit: kept
        (256, None, (30, 16)),  # no limit: official
    ],
)
def test_grid_shape(resolution: int, limit: int | None, expected: tuple[int, int]) -> None:
    assert grid_shape(resolution, limit) == expected


def test_capped_grids_are_near_square_and_nearly_full() -> None:
    for n in range(1, 400):
        gw, gh = grid_shape(64, n)
        assert gw * gh <= n and n - gw * gh < math.isqrt(n) + 1, n
        assert 0 <= gw - gh <= 2, (n, gw, gh)


def test_preview_images_are_written_in_the_near_square_grid(data: Path, tmp_path: Path) -> None:
    options = tiny_options(data, tmp_path / "run", kimg=0.004, preview_images=8)
    train(options)
    for name in ("reals.png", "fakes_init.png", "fakes000000.png"):
        assert Image.open(options.outdir / name).size == (4 * 16, 2 * 16), name
