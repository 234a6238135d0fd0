"""The networks a training run starts from: built from a preset, read from a network file to fine-tune
(an official PyTorch or TensorFlow pickle, or our generator file), or restored from one of our training
checkpoints to continue exactly; and the layers of D that Freeze-D keeps fixed.

A fine-tune follows the official resume (stylegan2-ada-pytorch `train.py`): networks and their configs
come from the file, the preset supplies the optimisation hyper-parameters with faster ADA, no EMA ramp-up
and no blur fade-in, and a file without D gets a D built from scratch (`require_all=False`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from gan.config import DiscriminatorConfig, GeneratorConfig
from gan.errors import ConfigError, FormatError, GanError
from gan.generator import build_generator
from gan.io.checkpoint import read_networks, sniff_network_file
from gan.stylegan2.discriminator import Discriminator
from gan.training import checkpoint as ckpt_io
from gan.training.options import TrainOptions, resolve_preset
from gan.training.presets import TrainingPreset


def build_networks(G_config: GeneratorConfig, D_config: DiscriminatorConfig) -> tuple[nn.Module, nn.Module]:
    return build_generator(G_config), Discriminator(D_config)


def size_preset_to_generator(
    preset: TrainingPreset, G_config: GeneratorConfig, options: TrainOptions
) -> TrainingPreset:
    """The preset with its channel base and max taken from the generator being fine-tuned, for a D built
    from scratch beside it (generator-only files: ours, the demo, pickles without D).

    The preset's own D is sized for a full-width G: at 64 px `auto` gives D 23M parameters, which beside
    the 0.4M-parameter demo generator made a CPU fine-tune take 16 minutes for 0.29 kimg and its
    checkpoints 288 MB. A D at G's channel base and max has a parameter count of the same order, as in
    every official config, where G and D share `--cbase` and `--cmax`. `--cbase`/`--cmax` given
    explicitly still win. Config R doubles G's feature maps over `--cbase`/`--cmax` (stylegan3
    train.py) while D keeps them, so they are halved back for it.
    """
    synthesis = G_config.synthesis
    widen = 2 if G_config.architecture == "stylegan3-r" else 1
    return preset.replace(
        channel_base=options.cbase if options.cbase is not None else synthesis.channel_base // widen,
        channel_max=options.cmax if options.cmax is not None else synthesis.channel_max // widen,
    )


def frozen_discriminator_layers(config: DiscriminatorConfig, freezed: int) -> list[str]:
    """Freeze-D (Mo et al. 2020) as the official `--freezed N`: the first N *layers* of D, counted from the
    top resolution block in the official order fromrgb, conv0, conv1, skip (networks.py DiscriminatorBlock)."""
    layers: list[str] = []
    res = config.img_resolution
    while res >= 8:
        if res == config.img_resolution or config.architecture == "skip":
            layers.append(f"b{res}.fromrgb")
        layers += [f"b{res}.conv0", f"b{res}.conv1"]
        if config.architecture == "resnet":
            layers.append(f"b{res}.skip")
        res //= 2
    if freezed > len(layers):
        raise ConfigError(
            f"--freezed {freezed}: D has only {len(layers)} layers above 4x4 that can be frozen"
        )
    return layers[:freezed]


def _module_config(module: nn.Module, kind: str) -> Any:
    config = getattr(module, "config", None)
    if config is None:
        raise GanError(f"the resumed {kind} network does not expose its config")
    return config


@dataclass
class NetworkSetup:
    """What a run starts from: its hyper-parameters, the networks and their configs."""

    preset: TrainingPreset
    G_config: GeneratorConfig
    D_config: DiscriminatorConfig
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    checkpoint: ckpt_io.TrainingCheckpoint | None  # ours, to continue exactly


def read_resume_networks(path: Path) -> dict[str, nn.Module]:
    """G, D and G_ema, those present, from an official PyTorch or TensorFlow pickle (safe import), or G_ema
    alone from our generator file: it holds G_ema alone (what the service stores for every model), so G
    starts from it and D from scratch, as the official resume of a pickle without D."""
    with open(path, "rb") as f:
        head = f.read(16)
    if sniff_network_file(head) is None:
        raise GanError(f"--resume {path.name}: neither a network pickle nor a training checkpoint")
    try:
        return read_networks(path, ("G", "D", "G_ema"), require_all=False).networks
    except FormatError as exc:
        raise FormatError(f"--resume {path.name}: {exc}") from exc


def _check_compatible(
    G_config: GeneratorConfig, resolution: int, c_dim: int, img_channels: int, source: Path
) -> None:
    if G_config.img_resolution != resolution:
        raise ConfigError(
            f"cannot fine-tune {source.name}: it makes {G_config.img_resolution} px images, the data set is {resolution} px"
        )
    if G_config.c_dim != c_dim:
        raise ConfigError(
            f"cannot fine-tune {source.name}: it has {G_config.c_dim} classes, the training run has {c_dim}"
            + (" (pass --cond to train on the data set's labels)" if c_dim == 0 and G_config.c_dim else "")
        )
    if G_config.img_channels != img_channels:
        raise ConfigError(
            f"cannot fine-tune {source.name}: it makes {G_config.img_channels}-channel images, the data set has {img_channels}"
        )


def setup_networks(options: TrainOptions, resolution: int, c_dim: int, channels: int) -> NetworkSetup:
    resume = options.resume
    if resume is not None and ckpt_io.is_training_checkpoint(Path(resume)):
        ckpt = ckpt_io.load_checkpoint(Path(resume))
        preset = TrainingPreset.from_dict(ckpt.meta["preset"])
        if options.kimg is not None:
            preset = preset.replace(kimg=options.kimg)
        G_config = GeneratorConfig.from_dict(ckpt.meta["G_config"])
        D_config = DiscriminatorConfig.from_dict(ckpt.meta["D_config"])
        _check_compatible(G_config, resolution, c_dim, channels, Path(resume))
        G, D = build_networks(G_config, D_config)
        G_ema = copy.deepcopy(G)
        for name, module in (("G", G), ("D", D), ("G_ema", G_ema)):
            module.load_state_dict(ckpt.module_state(name))
        return NetworkSetup(preset, G_config, D_config, G, D, G_ema, ckpt)

    preset = resolve_preset(options, resolution)
    if resume is None:
        G_config = preset.generator_config(resolution, c_dim, channels)
        D_config = preset.discriminator_config(resolution, c_dim, channels)
        G, D = build_networks(G_config, D_config)
        return NetworkSetup(preset, G_config, D_config, G, D, copy.deepcopy(G), None)

    # Fine-tuning from an official (or TF) pickle: networks and their configs come from the file; the
    # preset supplies the optimisation hyper-parameters, with the official resume changes (train.py):
    # faster ADA, no EMA ramp-up, no blur fade-in.
    nets = read_resume_networks(Path(resume))
    G_src = nets["G"] if "G" in nets else nets.get("G_ema")
    if G_src is None:
        raise GanError(f"{Path(resume).name} holds no generator to fine-tune")
    G_config = _module_config(G_src, "G")
    _check_compatible(G_config, resolution, c_dim, channels, Path(resume))
    if G_config.architecture != preset.architecture:
        if options.cfg not in ("auto", "stylegan3-t", "stylegan3-r") or G_config.architecture == "stylegan2":
            raise ConfigError(
                f"--cfg {options.cfg} trains {preset.architecture}, but {Path(resume).name} is {G_config.architecture}"
            )
        preset = resolve_preset(options, resolution, cfg=G_config.architecture)
    preset = preset.replace(ada_kimg=100.0, ema_rampup=None, blur_init_sigma=0.0)
    D_src = nets.get("D")
    if D_src is not None:
        D_config = _module_config(D_src, "D")
    else:  # a file with only generators: D starts from scratch, as official with require_all=False
        preset = size_preset_to_generator(preset, G_config, options)
        D_config = preset.discriminator_config(resolution, c_dim, channels)
    G, D = build_networks(G_config, D_config)
    G.load_state_dict(G_src.state_dict())
    if D_src is not None:
        D.load_state_dict(D_src.state_dict())
    G_ema = copy.deepcopy(G)
    if nets.get("G_ema") is not None:
        G_ema.load_state_dict(nets["G_ema"].state_dict())
    return NetworkSetup(preset, G_config, D_config, G, D, G_ema, None)
