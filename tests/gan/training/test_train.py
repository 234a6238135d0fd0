"""The training loop end to end on a 16 px synthetic set (seconds each on CPU)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from train_helpers import tiny_options, write_image_folder

from gan.errors import ConfigError
from gan.training import checkpoint as ck
from gan.training.loop import TrainResult, sample_indices, train
from gan.training.networks import frozen_discriminator_layers
from gan.training.options import TrainOptions
from gan.training.progress import read_stats


@pytest.fixture()
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("data") / "set")


@pytest.fixture()
def make_options(data: Path, tmp_path: Path) -> Callable[..., TrainOptions]:
    def make(name: str = "run", **overrides: Any) -> TrainOptions:
        return tiny_options(overrides.pop("data", data), tmp_path / name, **overrides)

    return make


class Recorder:
    def __init__(self, stop_after_ticks: int | None = None) -> None:
        self.ticks: list[dict[str, Any]] = []
        self.previews: list[Path] = []
        self.checkpoints: list[tuple[Path, float]] = []
        self.stop_after_ticks = stop_after_ticks

    def on_tick(self, stats: dict[str, Any]) -> None:
        self.ticks.append(stats)

    def on_progress(self, progress: dict[str, Any]) -> None:
        """Between-tick lines are not what these tests look at."""

    def on_preview(self, path: Path) -> None:
        self.previews.append(path)

    def on_checkpoint(self, path: Path, kimg: float, metrics: dict[str, float]) -> None:
        self.checkpoints.append((path, kimg))

    def should_stop(self) -> bool:
        return self.stop_after_ticks is not None and len(self.ticks) >= self.stop_after_ticks


def weights(result: TrainResult, name: str = "G_ema") -> dict[str, torch.Tensor]:
    assert result.checkpoint is not None
    return ck.load_checkpoint(result.checkpoint).module_state(name)


def test_a_few_ticks_give_finite_losses_change_G_and_write_everything(
    make_options: Callable[..., TrainOptions],
) -> None:
    options = make_options(aug="ada")
    rec = Recorder()
    result = train(options, rec)
    out = options.outdir
    assert result.kimg == pytest.approx(0.032) and not result.stopped
    stats = read_stats(out / "stats.jsonl")
    # tick 0 ends after the first iteration, then every 2 iterations: nimg 4, 12, 20, 28, 32
    assert [s["kimg"] for s in stats] == pytest.approx([0.004, 0.012, 0.020, 0.028, 0.032])
    for line in stats:
        for key in (
            "Loss/G/loss",
            "Loss/D/loss",
            "Loss/scores/real",
            "sec_per_kimg",
            "augment_p",
            "timestamp",
        ):
            assert key in line and line[key] is not None
    assert any("Loss/r1_penalty" in s for s in stats) and any("Loss/pl_penalty" in s for s in stats)
    assert rec.ticks == [{k: v for k, v in s.items() if k != "timestamp"} for s in stats]
    for name in ("reals.png", "fakes_init.png", "fakes000000.png"):
        assert (out / name).is_file(), name
    assert rec.previews[0] == out / "fakes_init.png"
    assert [k for _, k in rec.checkpoints] == pytest.approx([0.004, 0.020, 0.032])  # ticks 0, 2 and the end
    assert len(ck.list_checkpoints(out)) == 3  # keep=3

    final = ck.load_checkpoint(result.checkpoint)  # type: ignore[arg-type]
    init_G = ck.load_checkpoint(ck.list_checkpoints(out)[0])
    changed = [
        not torch.equal(v, init_G.module_state("G")[k])
        for k, v in final.module_state("G").items()
        if v.is_floating_point()
    ]
    assert sum(changed) > len(changed) // 2  # G moved
    assert all(torch.isfinite(v).all() for v in final.tensors.values() if v.is_floating_point())
    assert final.meta["counters"]["cur_nimg"] == 32


def test_model_export_loads_as_a_generator(make_options: Callable[..., TrainOptions]) -> None:
    from gan.io.checkpoint import load_generator

    result = train(make_options(kimg=0.008, export=True))
    assert result.model == result.outdir / "network-final.safetensors"
    G = load_generator(result.model)  # type: ignore[arg-type]
    ref = weights(result)
    for k, v in G.state_dict().items():
        assert torch.equal(v, ref[k])


@pytest.mark.parametrize("aug", [dict(aug="ada", target=0.0), dict(aug="fixed", p=0.5)])
def test_resume_continues_bit_exactly(make_options: Callable[..., TrainOptions], aug: dict[str, Any]) -> None:
    # stylegan2 preset: style mixing, path length, lazy R1 and augmentation draw random numbers.
    full = train(make_options("full", **aug))
    first = train(make_options("part", kimg=0.020, **aug))
    ckpt = ck.latest_checkpoint(first.outdir)
    assert ckpt is not None and ck.load_checkpoint(ckpt).meta["counters"]["cur_nimg"] == 20
    resumed = train(make_options("part", resume=ckpt, **aug))
    assert resumed.kimg == pytest.approx(full.kimg)
    a, b = ck.load_checkpoint(full.checkpoint), ck.load_checkpoint(resumed.checkpoint)  # type: ignore[arg-type]
    assert a.meta["augment"] == b.meta["augment"]
    assert set(a.tensors) == set(b.tensors)
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k
    assert a.meta["rng"] == b.meta["rng"]
    # and the uninterrupted run really differs from its start (the comparison is not vacuous)
    start = ck.load_checkpoint(ck.list_checkpoints(full.outdir)[0])
    assert not torch.equal(
        start.tensors["G.synthesis.b16.conv1.weight"], a.tensors["G.synthesis.b16.conv1.weight"]
    )


def test_cancel_from_the_callback_leaves_a_final_checkpoint(
    make_options: Callable[..., TrainOptions],
) -> None:
    rec = Recorder(stop_after_ticks=2)
    result = train(make_options(snap=100), rec)
    # Ticks end at nimg 4 and 12; should_stop is asked after every step, so the run stops after the next
    # one (nimg 16, half-way through the third tick), not at the third tick's end (20).
    assert result.stopped and result.kimg == pytest.approx(0.016)
    assert result.checkpoint is not None
    meta = ck.load_checkpoint(result.checkpoint).meta
    assert meta["counters"]["cur_nimg"] == 16
    assert rec.ticks[-1]["kimg"] == pytest.approx(0.016)  # the stop ends a tick, with its stats line
    assert rec.checkpoints[-1][0] == result.checkpoint


def test_conditional_training_and_class_mismatch_on_fine_tune(tmp_path: Path) -> None:
    labelled = write_image_folder(tmp_path / "labelled", classes=3)
    result = train(tiny_options(labelled, tmp_path / "cond", cond=True, kimg=0.008))
    meta = ck.load_checkpoint(result.checkpoint).meta  # type: ignore[arg-type]
    assert meta["G_config"]["c_dim"] == 3 and meta["D_config"]["c_dim"] == 3
    with pytest.raises(ConfigError, match="3 classes, the training run has 0"):
        train(tiny_options(labelled, tmp_path / "uncond", resume=result.checkpoint))
    with pytest.raises(ConfigError, match="--cond needs labels"):
        train(tiny_options(write_image_folder(tmp_path / "plain"), tmp_path / "x", cond=True))


def test_resolution_mismatch_on_fine_tune_fails_early(
    make_options: Callable[..., TrainOptions], tmp_path: Path
) -> None:
    result = train(make_options(kimg=0.004))
    bigger = write_image_folder(tmp_path / "big", resolution=32)
    with pytest.raises(ConfigError, match="16 px images, the data set is 32 px"):
        train(make_options("ft", data=bigger, resume=result.checkpoint))


def test_freezed_layers_stay_fixed(make_options: Callable[..., TrainOptions]) -> None:
    result = train(make_options(freezed=2, kimg=0.008))
    ckpts = ck.list_checkpoints(result.outdir)
    before, after = ck.load_checkpoint(ckpts[0]).module_state("D"), weights(result, "D")
    # freezed 2 = b16.fromrgb and b16.conv0 (official layer order); b16.conv1 still trains
    assert frozen_discriminator_layers(ck.load_checkpoint(ckpts[0]).meta and _d_config(ckpts[0]), 2) == [
        "b16.fromrgb",
        "b16.conv0",
    ]
    init = train(make_options("init", freezed=2, kimg=0.004))
    start = weights(init, "D")
    for k, v in after.items():
        if k.startswith(("b16.fromrgb.", "b16.conv0.")):
            assert torch.equal(v, start[k]), k
    assert not torch.equal(after["b16.conv1.weight"], start["b16.conv1.weight"])
    assert before.keys() == after.keys()


def _d_config(path: Path) -> Any:
    from gan.config import DiscriminatorConfig

    return DiscriminatorConfig.from_dict(ck.load_checkpoint(path).meta["D_config"])


def test_gradient_accumulation_matches_one_big_micro_batch(make_options: Callable[..., TrainOptions]) -> None:
    # cifar preset: no style mixing or path length (their random draws depend on the micro-batch split);
    # minibatch-std groups of 1, since groups are formed inside a micro-batch; no noise inputs, whose
    # draws follow the micro-batch shapes. Then the mean gradient
    # over 2 micro-batches of 2 equals the mean over 1 of 4 up to float rounding. (w_avg, a buffer that
    # only truncation reads, is a running mean per micro-batch and legitimately differs.)
    one = train(make_options("one", cfg="cifar", batch_gpu=4, mbstd_group=1, use_noise=False, kimg=0.012))
    two = train(make_options("two", cfg="cifar", batch_gpu=2, mbstd_group=1, use_noise=False, kimg=0.012))
    a, b = weights(one, "G"), weights(two, "G")
    diffs = [(a[k] - b[k]).abs().max().item() for k in a if not k.endswith("w_avg")]
    # Measured 1.5e-5: float32 summation order, which the demodulation's [N, I] x [I, O] product makes
    # depend on the micro-batch size, after Adam's per-parameter normalisation; a real mismatch is ~1e-3.
    assert max(diffs) < 1e-4


def test_bad_options_fail_early(make_options: Callable[..., TrainOptions]) -> None:
    with pytest.raises(ConfigError, match=r"--batch 4 must be a multiple of GPUs \(1\) x --batch-gpu \(3\)"):
        train(make_options(batch_gpu=3))
    with pytest.raises(ConfigError, match="--freezed 99"):
        train(make_options(freezed=99))
    with pytest.raises(ConfigError, match="--aug fixed requires --p"):
        make_options(aug="fixed")


def test_sample_stream_is_a_pure_function_of_position() -> None:
    whole = sample_indices(3, 10, 0, 35)
    assert (sample_indices(3, 10, 12, 9) == whole[12:21]).all()
    for epoch in range(3):
        assert sorted(whole[epoch * 10 : (epoch + 1) * 10].tolist()) == list(range(10))
