"""The style-based generator: mapping (z, c -> ws) followed by synthesis (ws -> image).

One class for both families: StyleGAN2(-ADA) and StyleGAN3 share the mapping network and its parameter
paths (`mapping.*`) and differ in `synthesis.*`, chosen by `config.architecture`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gan.config import GeneratorConfig, StyleGAN2SynthesisConfig, StyleGAN3SynthesisConfig
from gan.errors import ConfigError
from gan.stylegan2.mapping import MappingNetwork
from gan.stylegan2.synthesis import SynthesisNetwork
from gan.stylegan3.synthesis import SynthesisNetwork as StyleGAN3Synthesis
from gan.vocabulary import NoiseMode


def _build_synthesis(config: GeneratorConfig) -> tuple[nn.Module, int]:
    """The synthesis network for the architecture, and how many ws it consumes."""
    if config.architecture == "stylegan2":
        assert isinstance(config.synthesis, StyleGAN2SynthesisConfig)
        sg2 = SynthesisNetwork(
            w_dim=config.w_dim,
            img_resolution=config.img_resolution,
            img_channels=config.img_channels,
            config=config.synthesis,
        )
        return sg2, sg2.num_ws
    assert isinstance(config.synthesis, StyleGAN3SynthesisConfig)
    sg3 = StyleGAN3Synthesis(
        w_dim=config.w_dim,
        img_resolution=config.img_resolution,
        img_channels=config.img_channels,
        config=config.synthesis,
    )
    return sg3, sg3.num_ws


class Generator(nn.Module):
    """z [N, z_dim], c [N, c_dim] -> images [N, img_channels, img_resolution, img_resolution] in about [-1, 1]."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.z_dim = config.z_dim
        self.c_dim = config.c_dim
        self.w_dim = config.w_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        self.synthesis, self.num_ws = _build_synthesis(config)
        if self.num_ws != config.num_ws:
            raise ConfigError(f"synthesis consumes {self.num_ws} ws but the config says {config.num_ws}")
        self.mapping = MappingNetwork(
            z_dim=config.z_dim,
            c_dim=config.c_dim,
            w_dim=config.w_dim,
            num_ws=self.num_ws,
            config=config.mapping,
        )

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        psi: float = 1.0,
        cutoff: int | None = None,
        noise_mode: NoiseMode = "const",
        force_fp32: bool = False,
        update_emas: bool = False,
        **extra: Any,
    ) -> torch.Tensor:
        """`extra` goes to the synthesis network (StyleGAN3: `transform=`; StyleGAN2: `fused_modconv=`)."""
        ws = self.mapping(z, c, psi=psi, cutoff=cutoff, update_emas=update_emas)  # [N, num_ws, w_dim]
        img: torch.Tensor = self.synthesis(
            ws, noise_mode=noise_mode, force_fp32=force_fp32, update_emas=update_emas, **extra
        )
        return img

    def extra_repr(self) -> str:
        return (
            f"architecture={self.config.architecture}, z_dim={self.z_dim}, c_dim={self.c_dim}, "
            f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"
        )


def build_generator(config: GeneratorConfig) -> Generator:
    """A freshly initialized generator for `config` (weights random, as the official constructors draw them)."""
    return Generator(config)
