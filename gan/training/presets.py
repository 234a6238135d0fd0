"""Training configurations (`--cfg`) with the official hyper-parameters.

The StyleGAN2-ADA presets are the `cfg_specs` table of stylegan2-ada-pytorch `train.py` (paper Appendix
D); `auto` derives its values from the resolution and GPU count with the same heuristics. The StyleGAN3
presets follow stylegan3 `train.py` and `docs/configs.md`: 2-layer mapping whose w_avg decays at 0.998
(the stylegan3 `MappingNetwork` default, where StyleGAN2-ADA's is 0.995), G learning rate 0.0025,
EMA half-life `batch * 10 / 32` kimg with a 5 % ramp-up, no path-length or style-mixing
regularisation, and for config R 1x1 convolutions, radial filters, doubled channels and a blur of the
images D sees that fades out over the first `batch * 200 / 32` kimg.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gan.config import (
    Architecture,
    DiscriminatorConfig,
    GeneratorConfig,
    LossConfig,
    MappingConfig,
    StyleGAN2SynthesisConfig,
    StyleGAN3SynthesisConfig,
    SynthesisArchitecture,
)
from gan.errors import ConfigError
from gan.vocabulary import check_preset


@dataclass(frozen=True)
class TrainingPreset:
    """Every hyper-parameter a run needs beyond the data; resolved for one resolution and GPU count.

    Stored in training checkpoints, so a resumed run keeps the hyper-parameters it started with.
    """

    name: str
    architecture: Architecture
    ref_gpus: int  # GPU count the batch was tuned for (informational: we scale by --batch instead)
    kimg: float
    batch: int
    mbstd_group: int
    channel_base: int
    channel_max: int
    map_layers: int
    # Decay of the tracked w_avg (the truncation centre): the official MappingNetwork default of each code
    # base, 0.995 in stylegan2-ada-pytorch and 0.998 in stylegan3; train.py sets neither.
    w_avg_beta: float = 0.995
    z_dim: int = 512
    w_dim: int = 512
    glr: float = 0.002
    dlr: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    gamma: float = 10.0
    ema_kimg: float = 10.0
    ema_rampup: float | None = None
    style_mixing_prob: float = 0.9
    pl_weight: float = 2.0
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    g_reg_interval: int | None = 4
    d_reg_interval: int | None = 16
    blur_init_sigma: float = 0.0
    blur_fade_kimg: float = 0.0
    d_architecture: SynthesisArchitecture = "resnet"
    num_fp16_res: int = 4  # mixed precision on CUDA (StyleGAN2-ADA paper, Appendix D.2)
    conv_clamp: float | None = 256.0
    magnitude_ema_beta: float | None = None  # StyleGAN3 only: 0.5 ** (batch / 20k)
    ada_kimg: float = 500.0  # kimg for p to move by one unit (100 when fine-tuning, as official)
    ada_interval: int = 4
    use_noise: bool = True  # StyleGAN2 per-pixel noise; off only in tests that compare batch splits

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ConfigError(f"batch must be >= 1, got {self.batch}")
        if self.gamma < 0:
            raise ConfigError(f"gamma must be >= 0, got {self.gamma}")
        if self.kimg <= 0:
            raise ConfigError(f"kimg must be > 0, got {self.kimg}")
        if self.mbstd_group < 1:
            raise ConfigError(f"mbstd group size must be >= 1, got {self.mbstd_group}")
        if not 0 <= self.w_avg_beta < 1:
            raise ConfigError(f"w_avg_beta must be in [0, 1), got {self.w_avg_beta}")

    def replace(self, **changes: Any) -> TrainingPreset:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingPreset:
        try:
            d = dict(d)
            d["betas"] = tuple(d.get("betas", (0.0, 0.99)))
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"invalid training preset: {exc}") from exc

    def loss_config(self) -> LossConfig:
        """The objective's weights: R1 gamma, style mixing, path length (with its batch shrink and running
        mean's decay) and the StyleGAN3-R blur, as the official train.py passes them to its loss."""
        return LossConfig(
            r1_gamma=self.gamma,
            style_mixing_prob=self.style_mixing_prob,
            pl_weight=self.pl_weight,
            pl_batch_shrink=self.pl_batch_shrink,
            pl_decay=self.pl_decay,
            blur_init_sigma=self.blur_init_sigma,
            blur_fade_kimg=self.blur_fade_kimg,
        )

    # Network configs -----------------------------------------------------------------------------

    def generator_config(self, resolution: int, c_dim: int, img_channels: int) -> GeneratorConfig:
        mapping = MappingConfig(num_layers=self.map_layers, w_avg_beta=self.w_avg_beta)
        synthesis: StyleGAN2SynthesisConfig | StyleGAN3SynthesisConfig
        if self.architecture == "stylegan2":
            synthesis = StyleGAN2SynthesisConfig(
                channel_base=self.channel_base,
                channel_max=self.channel_max,
                num_fp16_res=self.num_fp16_res,
                conv_clamp=self.conv_clamp,
                use_noise=self.use_noise,
            )
        else:
            r = self.architecture == "stylegan3-r"
            synthesis = StyleGAN3SynthesisConfig(
                # Config R doubles the feature maps (stylegan3 train.py).
                channel_base=self.channel_base * (2 if r else 1),
                channel_max=self.channel_max * (2 if r else 1),
                num_fp16_res=self.num_fp16_res,
                conv_clamp=self.conv_clamp,
                conv_kernel=1 if r else 3,
                use_radial_filters=r,
                magnitude_ema_beta=self.magnitude_ema_beta or 0.999,
            )
        return GeneratorConfig(
            architecture=self.architecture,
            z_dim=self.z_dim,
            c_dim=c_dim,
            w_dim=self.w_dim,
            img_resolution=resolution,
            img_channels=img_channels,
            mapping=mapping,
            synthesis=synthesis,
        )

    def discriminator_config(self, resolution: int, c_dim: int, img_channels: int) -> DiscriminatorConfig:
        return DiscriminatorConfig(
            c_dim=c_dim,
            img_resolution=resolution,
            img_channels=img_channels,
            architecture=self.d_architecture,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
            num_fp16_res=self.num_fp16_res,
            conv_clamp=self.conv_clamp,
            mbstd_group_size=self.mbstd_group,
        )


# stylegan2-ada-pytorch train.py `cfg_specs`: ref_gpus, kimg, mb, mbstd, fmaps, lrate, gamma, ema, ramp, map.
_SG2_SPECS: dict[str, tuple[int, float, int, int, float, float, float, float, float | None, int]] = {
    "stylegan2": (8, 25000, 32, 4, 1.0, 0.002, 10.0, 10.0, None, 8),
    "paper256": (8, 25000, 64, 8, 0.5, 0.0025, 1.0, 20.0, None, 8),
    "paper512": (8, 25000, 64, 8, 1.0, 0.0025, 0.5, 20.0, None, 8),
    "paper1024": (8, 25000, 32, 4, 1.0, 0.002, 2.0, 10.0, None, 8),
    "cifar": (2, 100000, 64, 32, 1.0, 0.0025, 0.01, 500.0, 0.05, 2),
}


def auto_gamma(resolution: int, batch: int) -> float:
    """The StyleGAN2-ADA `auto` heuristic: R1 weight grows with the image area, shrinks with the batch."""
    return 0.0002 * resolution**2 / batch


def stylegan3_gamma(resolution: int) -> float:
    """stylegan3 `docs/configs.md`: gamma 2 at 256 px, scaled quadratically with resolution.

    The official trainer makes --gamma mandatory for StyleGAN3; this rule of thumb is its documented
    starting point (0.5 at 128, 8 at 512, 32 at 1024).
    """
    return 2.0 * (resolution / 256) ** 2


def make_preset(
    name: str,
    resolution: int,
    gpus: int = 1,
    batch: int | None = None,
) -> TrainingPreset:
    """Resolve preset `name` for a data set of `resolution` px trained on `gpus` GPUs.

    `batch` overrides the preset's batch before the batch-dependent values (auto's gamma and EMA, the
    StyleGAN3 EMA, magnitude EMA and blur fade) are derived, as the official scripts do.
    """
    check_preset(name)
    if gpus < 1:
        raise ConfigError(f"gpus must be >= 1, got {gpus}")
    if batch is not None and batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")

    if name == "auto":
        mb = batch or max(min(gpus * min(4096 // resolution, 32), 64), gpus)
        return TrainingPreset(
            name=name,
            architecture="stylegan2",
            ref_gpus=gpus,
            kimg=25000,
            batch=mb,
            mbstd_group=min(mb // gpus, 4),  # a fixed group size keeps other hyper-parameters predictable
            channel_base=int((1.0 if resolution >= 512 else 0.5) * 32768),
            channel_max=512,
            map_layers=2,
            glr=0.002 if resolution >= 1024 else 0.0025,
            dlr=0.002 if resolution >= 1024 else 0.0025,
            gamma=auto_gamma(resolution, mb),
            ema_kimg=mb * 10 / 32,
            ema_rampup=0.05,
        )

    if name in _SG2_SPECS:
        ref_gpus, kimg, mb, mbstd, fmaps, lrate, gamma, ema, ramp, map_layers = _SG2_SPECS[name]
        cifar = name == "cifar"
        return TrainingPreset(
            name=name,
            architecture="stylegan2",
            ref_gpus=ref_gpus,
            kimg=kimg,
            batch=batch or mb,
            mbstd_group=mbstd,
            channel_base=int(fmaps * 32768),
            channel_max=512,
            map_layers=map_layers,
            glr=lrate,
            dlr=lrate,
            gamma=gamma,
            ema_kimg=ema,
            ema_rampup=ramp,
            # cifar: no path length or mixing regularisation and a plain D (official train.py).
            style_mixing_prob=0.0 if cifar else 0.9,
            pl_weight=0.0 if cifar else 2.0,
            d_architecture="orig" if cifar else "resnet",
        )

    # StyleGAN3: stylegan3 train.py with its defaults --cbase 32768 --cmax 512 --dlr 0.002 --mbstd-group 4.
    mb = batch or 32
    r = name == "stylegan3-r"
    return TrainingPreset(
        name=name,
        architecture="stylegan3-r" if r else "stylegan3-t",
        ref_gpus=8,
        kimg=25000,
        batch=mb,
        mbstd_group=4,
        channel_base=32768,
        channel_max=512,
        map_layers=2,
        w_avg_beta=0.998,
        glr=0.0025,
        dlr=0.002,
        gamma=stylegan3_gamma(resolution),
        ema_kimg=mb * 10 / 32,
        ema_rampup=0.05,
        style_mixing_prob=0.0,
        pl_weight=0.0,
        g_reg_interval=None,
        blur_init_sigma=10.0 if r else 0.0,
        blur_fade_kimg=mb * 200 / 32 if r else 0.0,
        magnitude_ema_beta=0.5 ** (mb / (20 * 1e3)),
    )
