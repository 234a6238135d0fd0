"""Fine-tuning from an official pickle refuses a data set of another resolution before training.

That every fixture fine-tunes a tick (the service's main use: bring 500 photos), and what the step does to
G and D, is asserted once per fixture through the command line in test_finetune_end_to_end.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import tiny_options, write_image_folder

from gan.errors import ConfigError
from gan.training.loop import train
from gan.training.networks import read_resume_networks

FIXTURES = sorted(
    Path(__file__).resolve().parents[4].joinpath("shared/fixtures/official").glob("*/network.pkl")
)


def test_fixtures_are_present() -> None:
    assert FIXTURES, "no official fixtures found under ../shared/fixtures/official"


def test_fine_tune_at_another_resolution_fails_early(tmp_path: Path) -> None:
    pkl = FIXTURES[0]
    config = read_resume_networks(pkl)["G_ema"].config  # type: ignore[union-attr]
    data = write_image_folder(
        tmp_path / "data", count=4, resolution=config.img_resolution * 2, classes=config.c_dim
    )
    options = tiny_options(data, tmp_path / "run", resume=pkl, cond=config.c_dim > 0, mbstd_group=None)
    with pytest.raises(
        ConfigError,
        match=f"{config.img_resolution} px images, the data set is {config.img_resolution * 2} px",
    ):
        train(options)
