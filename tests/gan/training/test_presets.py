"""Mapping-network defaults of each preset against the official trainers.

stylegan3 `train.py` builds its StyleGAN3 generators with a 2-layer mapping (`--map-depth` default) and
leaves `w_avg_beta` at the stylegan3 `MappingNetwork` default, 0.998; stylegan2-ada-pytorch `train.py`
takes the depth from `cfg_specs` (8, or 2 for auto and cifar) and keeps its `MappingNetwork` default,
0.995. `MappingConfig`'s defaults stay StyleGAN2's (the file format depends on them), so the presets
must set both.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import tiny_options, write_image_folder

from gan.config import MappingConfig
from gan.errors import ConfigError
from gan.training import checkpoint as ck
from gan.training.loop import train
from gan.training.presets import make_preset
from gan.vocabulary import PRESET_NAMES

OFFICIAL_MAPPING = {  # preset -> (layers, w_avg_beta)
    "auto": (2, 0.995),
    "stylegan2": (8, 0.995),
    "paper256": (8, 0.995),
    "paper512": (8, 0.995),
    "paper1024": (8, 0.995),
    "cifar": (2, 0.995),
    "stylegan3-t": (2, 0.998),
    "stylegan3-r": (2, 0.998),
}


def test_every_preset_is_listed() -> None:
    assert set(OFFICIAL_MAPPING) == set(PRESET_NAMES)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_mapping_depth_and_w_avg_beta_are_official(name: str) -> None:
    layers, beta = OFFICIAL_MAPPING[name]
    mapping = make_preset(name, 64).generator_config(64, 0, 3).mapping
    assert (mapping.num_layers, mapping.w_avg_beta) == (layers, beta)
    # Everything else in the mapping network is the shared official default.
    assert mapping == MappingConfig(num_layers=layers, w_avg_beta=beta)


def test_stylegan3_from_scratch_trains_with_its_own_mapping(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "data", count=8)
    # map_layers=None: the preset's depth, not the 2 the tiny options force on every run.
    options = tiny_options(data, tmp_path / "run", cfg="stylegan3-t", kimg=0.004, map_layers=None, cbase=512)
    result = train(options)
    meta = ck.load_checkpoint(result.checkpoint).meta  # type: ignore[arg-type]
    assert meta["G_config"]["architecture"] == "stylegan3-t"
    assert (meta["G_config"]["mapping"]["num_layers"], meta["G_config"]["mapping"]["w_avg_beta"]) == (
        2,
        0.998,
    )
    assert meta["preset"]["w_avg_beta"] == 0.998
    # --map still overrides the depth; the decay stays the architecture's.
    deeper = train(
        tiny_options(data, tmp_path / "map4", cfg="stylegan3-t", kimg=0.004, map_layers=4, cbase=512)
    )
    mapping = ck.load_checkpoint(deeper.checkpoint).meta["G_config"]["mapping"]  # type: ignore[arg-type]
    assert (mapping["num_layers"], mapping["w_avg_beta"]) == (4, 0.998)


def test_a_checkpoint_preset_without_w_avg_beta_reads_as_stylegan2_ada() -> None:
    # Checkpoints written before the field existed still resume (their networks are rebuilt from the
    # stored G_config, which holds the 0.995 they were built with).
    d = make_preset("paper256", 256).to_dict()
    del d["w_avg_beta"]
    assert type(make_preset("paper256", 256)).from_dict(d).w_avg_beta == 0.995
    with pytest.raises(ConfigError, match="w_avg_beta"):
        make_preset("stylegan3-t", 64).replace(w_avg_beta=1.0)
