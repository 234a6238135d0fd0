"""Frozen configurations of the networks, round-tripping through JSON.

Defaults are the official class defaults (stylegan2-ada-pytorch `training/networks.py`, stylegan3
`training/networks_stylegan3.py`); the training presets in `gan/training/` override them as the official
`train.py` does. A checkpoint stores `GeneratorConfig.to_dict()` beside the weights, so every field here
is part of our file format: add fields with defaults, never rename.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from gan.errors import ConfigError

Architecture = Literal["stylegan2", "stylegan3-t", "stylegan3-r"]
Activation = Literal["linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"]
SynthesisArchitecture = Literal["orig", "skip", "resnet"]
ARCHITECTURES: tuple[Architecture, ...] = ("stylegan2", "stylegan3-t", "stylegan3-r")


def _is_power_of_two(n: int) -> bool:
    return n >= 4 and (n & (n - 1)) == 0


@dataclass(frozen=True)
class MappingConfig:
    """z (+ embedded label) -> w: `num_layers` fully connected layers at `lr_multiplier` x the rate."""

    num_layers: int = 8
    embed_features: int | None = None  # label embedding width; None = w_dim
    layer_features: int | None = None  # hidden width; None = w_dim
    activation: Activation = "lrelu"
    lr_multiplier: float = 0.01
    w_avg_beta: float | None = 0.995  # EMA decay of w_avg; None = do not track

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ConfigError(f"mapping.num_layers must be >= 1, got {self.num_layers}")


@dataclass(frozen=True)
class StyleGAN2SynthesisConfig:
    """StyleGAN2(-ADA) synthesis: a block per resolution 4, 8, ..., img_resolution."""

    channel_base: int = 32768  # channels at resolution r = min(channel_base // r, channel_max)
    channel_max: int = 512
    num_fp16_res: int = 0  # the top N resolutions run in fp16 on CUDA
    conv_clamp: float | None = None  # clamp conv outputs to +-conv_clamp (needed with fp16)
    architecture: SynthesisArchitecture = "skip"
    resample_filter: tuple[int, ...] = (1, 3, 3, 1)
    use_noise: bool = True
    activation: Activation = "lrelu"

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)


@dataclass(frozen=True)
class StyleGAN3SynthesisConfig:
    """StyleGAN3 (alias-free) synthesis: `num_layers` layers between a Fourier input and toRGB."""

    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 14
    num_critical: int = 2  # critically sampled layers at the end
    first_cutoff: float = 2.0  # cutoff of the first layer, in cycles per unit
    first_stopband: float = 2**2.1
    last_stopband_rel: float = 2**0.3
    margin_size: int = 10  # extra pixels around each layer's output
    output_scale: float = 0.25
    num_fp16_res: int = 4
    conv_clamp: float | None = 256
    conv_kernel: int = 3  # 1 for config R
    use_radial_filters: bool = False  # True for config R
    magnitude_ema_beta: float = 0.999
    filter_size: int = 6  # low-pass filter taps per sampling rate
    lrelu_upsampling: int = 2  # oversampling around the nonlinearity


SynthesisConfig = StyleGAN2SynthesisConfig | StyleGAN3SynthesisConfig


@dataclass(frozen=True)
class GeneratorConfig:
    architecture: Architecture = "stylegan2"
    z_dim: int = 512
    c_dim: int = 0
    w_dim: int = 512
    img_resolution: int = 1024
    img_channels: int = 3
    mapping: MappingConfig = field(default_factory=MappingConfig)
    synthesis: SynthesisConfig = field(default_factory=StyleGAN2SynthesisConfig)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}"
            )
        for name in ("z_dim", "w_dim", "img_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.c_dim < 0:
            raise ConfigError(f"c_dim must be >= 0, got {self.c_dim}")
        if not _is_power_of_two(self.img_resolution):
            raise ConfigError(f"img_resolution must be a power of two >= 4, got {self.img_resolution}")
        sg3 = self.architecture.startswith("stylegan3")
        if sg3 != isinstance(self.synthesis, StyleGAN3SynthesisConfig):
            raise ConfigError(f"architecture {self.architecture!r} does not match the synthesis config")

    @property
    def num_ws(self) -> int:
        """How many w vectors the synthesis network consumes (18 at 1024 px for StyleGAN2, 16 for StyleGAN3)."""
        if isinstance(self.synthesis, StyleGAN3SynthesisConfig):
            return self.synthesis.num_layers + 2
        # StyleGAN2: b4 has one conv, every later block two; the last block's toRGB adds one more.
        return 2 * int(math.log2(self.img_resolution)) - 2

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["synthesis"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["synthesis"].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratorConfig:
        try:
            d = dict(d)
            arch = d.get("architecture", "stylegan2")
            synth_cls = (
                StyleGAN3SynthesisConfig if str(arch).startswith("stylegan3") else StyleGAN2SynthesisConfig
            )
            synth = dict(d.pop("synthesis", {}))
            if "resample_filter" in synth:
                synth["resample_filter"] = tuple(synth["resample_filter"])
            mapping = MappingConfig(**d.pop("mapping", {}))
            return cls(mapping=mapping, synthesis=synth_cls(**synth), **d)
        except TypeError as exc:  # unknown or missing field names
            raise ConfigError(f"invalid generator config: {exc}") from exc


@dataclass(frozen=True)
class DiscriminatorConfig:
    """StyleGAN2(-ADA) discriminator, used for both generator families as in the official code."""

    c_dim: int = 0
    img_resolution: int = 1024
    img_channels: int = 3
    architecture: SynthesisArchitecture = "resnet"
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0
    conv_clamp: float | None = None
    cmap_dim: int | None = None  # projection width for conditional D; None = channels at 4x4
    activation: Activation = "lrelu"
    mbstd_group_size: int = 4  # minibatch standard deviation over groups of this size
    mbstd_num_channels: int = 1
    mapping: MappingConfig = field(default_factory=lambda: MappingConfig(w_avg_beta=None))  # embeds c

    def __post_init__(self) -> None:
        if not _is_power_of_two(self.img_resolution):
            raise ConfigError(f"img_resolution must be a power of two >= 4, got {self.img_resolution}")

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiscriminatorConfig:
        try:
            d = dict(d)
            mapping = MappingConfig(**d.pop("mapping", {}))
            return cls(mapping=mapping, **d)
        except TypeError as exc:
            raise ConfigError(f"invalid discriminator config: {exc}") from exc


# The training objective's weights (gan/training/loss.py): R1 (Mescheder et al. 2018), style mixing and path
# length (StyleGAN2 Sec. 3.2), the StyleGAN3-R blur of D's inputs. Here, without torch, so that a training
# preset (gan/training/presets.py) can build one.
@dataclass(frozen=True)
class LossConfig:
    r1_gamma: float = 10.0
    style_mixing_prob: float = 0.0
    pl_weight: float = 0.0
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    blur_init_sigma: float = 0.0
    blur_fade_kimg: float = 0.0

    def __post_init__(self) -> None:
        if self.r1_gamma < 0 or self.pl_weight < 0:
            raise ConfigError("r1_gamma and pl_weight must be >= 0")
        if not 0 <= self.style_mixing_prob <= 1:
            raise ConfigError(f"style_mixing_prob must be in [0, 1], got {self.style_mixing_prob}")
        if self.pl_batch_shrink < 1:
            raise ConfigError(f"pl_batch_shrink must be >= 1, got {self.pl_batch_shrink}")
