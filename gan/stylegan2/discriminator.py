"""StyleGAN2(-ADA) discriminator: images [N, C, R, R] (+ labels c) -> logits [N, 1].

StyleGAN2 paper, section 4.1 and figure 7: one block per resolution R, R/2, ..., 8, each two 3x3 convs
(the second downsampling by 2 through the [1, 3, 3, 1] filter); `resnet` (the default) adds a 1x1
residual branch, `skip` feeds a downsampled image to every block through fromRGB, `orig` is the chain.
The 4x4 epilogue appends the minibatch standard deviation (ProGAN paper, section 3) and ends in a fully
connected layer. A conditional D projects its output on a mapping of c (Miyato & Koyama 2018,
"cGANs with projection discriminator"), as StyleGAN2-ADA does.

Parameter paths are the official ones: `b{res}.fromrgb/conv0/conv1/skip`, `b4.mbstd` (no parameters),
`b4.conv`, `b4.fc`, `b4.out`, and `mapping.*` for the label projection. The StyleGAN3 repository trains
its generators against this same discriminator.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from gan.config import Activation, DiscriminatorConfig, SynthesisArchitecture
from gan.errors import ConfigError
from gan.nn.equalized import Conv2d, FullyConnected
from gan.nn.filters import downsample2d, setup_filter
from gan.stylegan2.mapping import MappingNetwork
from gan.stylegan2.synthesis import block_dtype, fp16_resolution


class DiscriminatorBlock(nn.Module):
    """[fromRGB] -> conv0 -> conv1 (down 2), at one resolution; resnet adds a 1x1 downsampled skip."""

    resample_filter: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        architecture: SynthesisArchitecture = "resnet",
        activation: Activation = "lrelu",
        resample_filter: tuple[int, ...] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_fp16: bool = False,
    ) -> None:
        super().__init__()
        if in_channels not in (0, tmp_channels):
            raise ConfigError(f"block input channels must be 0 or {tmp_channels}, got {in_channels}")
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))

        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2d(img_channels, tmp_channels, 1, activation=activation, conv_clamp=conv_clamp)
        self.conv0 = Conv2d(tmp_channels, tmp_channels, 3, activation=activation, conv_clamp=conv_clamp)
        self.conv1 = Conv2d(
            tmp_channels,
            out_channels,
            3,
            activation=activation,
            down=2,
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
        )
        if architecture == "resnet":
            self.skip = Conv2d(
                tmp_channels, out_channels, 1, bias=False, down=2, resample_filter=resample_filter
            )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, force_fp32: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [N, tmp, res, res] (None for the first block), img [N, C, res, res] or None
        -> (x [N, out, res/2, res/2], img [N, C, res/2, res/2] for skip, else None)."""
        device = (x if x is not None else img).device  # type: ignore[union-attr]
        dtype = block_dtype(self.use_fp16, device, force_fp32)
        if x is not None:
            x = x.to(dtype)

        if self.in_channels == 0 or self.architecture == "skip":
            assert img is not None
            if img.shape[1:] != (self.img_channels, self.resolution, self.resolution):
                raise ValueError(
                    f"expected images [N, {self.img_channels}, {self.resolution}, {self.resolution}], "
                    f"got {list(img.shape)}"
                )
            img = img.to(dtype)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None

        assert x is not None
        if self.architecture == "resnet":
            # Both branches scaled by sqrt(1/2) so that their sum keeps unit variance.
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}"


# Minibatch standard deviation (ProGAN paper, section 3): the std of each feature over a group of
# samples, averaged over features and pixels, appended as `num_channels` extra feature maps. It lets D
# see the variety of a batch and so penalizes mode collapse.
class MinibatchStdLayer(nn.Module):
    def __init__(self, group_size: int | None, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g != 0:
            raise ValueError(f"the batch size {n} must be a multiple of the mbstd group size {g}")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, n, F, c, H, W]: sample i is in group i % (N/G)
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [n, F, c, H, W] std over each group
        y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)  # [n, F, 1, 1]
        y = y.repeat(g, 1, h, w)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)  # [N, C + F, H, W]

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(nn.Module):
    """4x4: [fromRGB] -> mbstd -> conv -> fc -> out, then the projection on cmap when conditional."""

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        architecture: SynthesisArchitecture = "resnet",
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: Activation = "lrelu",
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2d(img_channels, in_channels, 1, activation=activation)
        self.mbstd = (
            MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        )
        self.conv = Conv2d(
            in_channels + mbstd_num_channels, in_channels, 3, activation=activation, conv_clamp=conv_clamp
        )
        self.fc = FullyConnected(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnected(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None) -> torch.Tensor:
        """x [N, C, 4, 4], img [N, img_channels, 4, 4] for skip, cmap [N, cmap_dim] -> [N, 1]; always fp32."""
        x = x.to(torch.float32)
        if self.architecture == "skip":
            assert img is not None
            x = x + self.fromrgb(img.to(torch.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))  # [N, C]
        x = self.out(x)  # [N, 1] or [N, cmap_dim]
        if self.cmap_dim > 0:
            assert cmap is not None
            # Projection: inner product with the label's embedding, normalized by sqrt(cmap_dim).
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """img [N, img_channels, R, R], c [N, c_dim] -> logits [N, 1] (real > 0 > fake after training)."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        if config.img_resolution < 8:
            raise ConfigError(f"the discriminator needs img_resolution >= 8, got {config.img_resolution}")
        self.config = config
        self.c_dim = config.c_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        log2 = int(math.log2(config.img_resolution))
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        fp16_res = fp16_resolution(config.img_resolution, config.num_fp16_res)
        cmap_dim = 0 if config.c_dim == 0 else (config.cmap_dim or config.channels(4))
        self.cmap_dim = cmap_dim

        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                in_channels=config.channels(res) if res < config.img_resolution else 0,
                tmp_channels=config.channels(res),
                out_channels=config.channels(res // 2),
                resolution=res,
                img_channels=config.img_channels,
                architecture=config.architecture,
                activation=config.activation,
                conv_clamp=config.conv_clamp,
                use_fp16=res >= fp16_res,
            )
            setattr(self, f"b{res}", block)
        if config.c_dim > 0:
            # The label mapping never truncates, so it keeps no w_avg (as the official D forces).
            mapping_config = dataclasses.replace(config.mapping, w_avg_beta=None)
            self.mapping = MappingNetwork(
                z_dim=0, c_dim=config.c_dim, w_dim=cmap_dim, num_ws=None, config=mapping_config
            )
        self.b4 = DiscriminatorEpilogue(
            config.channels(4),
            cmap_dim=cmap_dim,
            resolution=4,
            img_channels=config.img_channels,
            architecture=config.architecture,
            mbstd_group_size=config.mbstd_group_size,
            mbstd_num_channels=config.mbstd_num_channels,
            activation=config.activation,
            conv_clamp=config.conv_clamp,
        )

    def forward(
        self, img: torch.Tensor, c: torch.Tensor | None, update_emas: bool = False, force_fp32: bool = False
    ) -> torch.Tensor:
        """`update_emas` is accepted for the common interface; D tracks no EMA."""
        expected = (self.img_channels, self.img_resolution, self.img_resolution)
        if img.ndim != 4 or img.shape[1:] != expected:
            raise ValueError(f"img must be [N, {', '.join(map(str, expected))}], got {list(img.shape)}")
        if self.c_dim == 0 and c is not None and c.numel() > 0:
            raise ValueError(
                f"this discriminator is unconditional (c_dim 0) but got c of shape {list(c.shape)}"
            )
        x: torch.Tensor | None = None
        cur_img: torch.Tensor | None = img
        for res in self.block_resolutions:
            x, cur_img = getattr(self, f"b{res}")(x, cur_img, force_fp32=force_fp32)
        assert x is not None
        cmap = self.mapping(None, c) if self.c_dim > 0 else None  # [N, cmap_dim]
        logits: torch.Tensor = self.b4(x, cur_img, cmap)  # [N, 1]
        return logits

    def extra_repr(self) -> str:
        return f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}"
