"""Fine-tuning from every official fixture pickle runs a tick (the service's main use: bring 500 photos)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_helpers import tiny_options, write_image_folder

from gan.errors import ConfigError
from gan.training import checkpoint as ck
from gan.training.loop import load_pickle_networks, train

FIXTURES = sorted(
    Path(__file__).resolve().parents[4].joinpath("shared/fixtures/official").glob("*/network.pkl")
)


def test_fixtures_are_present() -> None:
    assert FIXTURES, "no official fixtures found under ../shared/fixtures/official"


@pytest.mark.parametrize("pkl", FIXTURES, ids=[p.parent.name for p in FIXTURES])
def test_fine_tune_from_official_pickle_runs_a_tick(pkl: Path, tmp_path: Path) -> None:
    nets = load_pickle_networks(pkl)
    G_src = nets["G"] if "G" in nets else nets["G_ema"]
    config = G_src.config  # type: ignore[union-attr]
    data = write_image_folder(
        tmp_path / "data", count=8, resolution=config.img_resolution, classes=config.c_dim
    )
    options = tiny_options(
        data,
        tmp_path / "run",
        cfg="auto",
        resume=pkl,
        cond=config.c_dim > 0,
        kimg=0.004,  # one iteration of 4 images
        batch=4,
        mbstd_group=None,
        aug="ada",
        preview_images=4,
    )
    result = train(options)
    assert result.kimg == pytest.approx(0.004)
    final = ck.load_checkpoint(result.checkpoint)  # type: ignore[arg-type]
    assert final.meta["G_config"] == config.to_dict()  # the architecture is the pickle's, not the preset's
    assert final.meta["preset"]["ada_kimg"] == 100.0 and final.meta["preset"]["ema_rampup"] is None
    start = G_src.state_dict()
    trained = final.module_state("G")
    moved = [k for k, v in trained.items() if v.is_floating_point() and not torch.equal(v, start[k])]
    assert moved, "one step of Adam must move G"
    assert all(torch.isfinite(v).all() for v in final.tensors.values() if v.is_floating_point())
    stats = json.loads((tmp_path / "run" / "stats.jsonl").read_text().splitlines()[-1])
    assert all(stats[k] is not None for k in ("Loss/G/loss", "Loss/D/loss"))
    if "D" in nets:  # D continued from the pickle's weights, not from scratch
        d0 = nets["D"].state_dict()
        d1 = final.module_state("D")
        close = [torch.allclose(d0[k], d1[k], atol=0.05) for k in d0 if d0[k].is_floating_point()]
        assert all(close)


def test_fine_tune_at_another_resolution_fails_early(tmp_path: Path) -> None:
    pkl = FIXTURES[0]
    config = load_pickle_networks(pkl)["G_ema"].config  # type: ignore[union-attr]
    data = write_image_folder(
        tmp_path / "data", count=4, resolution=config.img_resolution * 2, classes=config.c_dim
    )
    options = tiny_options(data, tmp_path / "run", resume=pkl, cond=config.c_dim > 0, mbstd_group=None)
    with pytest.raises(
        ConfigError,
        match=f"{config.img_resolution} px images, the data set is {config.img_resolution * 2} px",
    ):
        train(options)
