"""Layers with the equalized learning rate (ProGAN paper, section 4.1).

Weights are stored as N(0, 1) / lr_multiplier and scaled at run time by lr_multiplier / sqrt(fan_in), so
that Adam's per-parameter step size acts alike on every layer whatever its fan-in; `lr_multiplier`
slows a whole layer down (0.01 in the mapping network, StyleGAN paper, appendix C).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from gan.config import Activation
from gan.nn.bias_act import bias_act, default_gain
from gan.nn.conv2d_resample import conv2d_resample
from gan.nn.filters import setup_filter


class FullyConnected(nn.Module):
    """y = act(x @ (weight * weight_gain).T + bias * bias_gain)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: Activation = "linear",
        lr_multiplier: float = 1.0,
        weight_init: float = 1.0,
        bias_init: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) * (weight_init / lr_multiplier))
        if bias:
            init = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features])
            self.bias: nn.Parameter | None = nn.Parameter(torch.from_numpy(init / lr_multiplier))
        else:
            self.bias = None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain  # [out, in]
        b: torch.Tensor | None = None
        if self.bias is not None:
            b = self.bias.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"
        )


class Conv2d(nn.Module):
    """Equalized conv with optional FIR up/down-sampling, bias, activation and output clamp.

    `forward(x, gain)` multiplies both the activation gain and the clamp by `gain`: the resnet blocks
    pass sqrt(1/2) so that the sum of two branches keeps unit variance.
    """

    resample_filter: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: Activation = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[int] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = default_gain(activation)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias: nn.Parameter | None = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        # Official layers correlate without resampling and truly convolve when upsampling; the weights
        # in their pickles are trained that way, so keep it.
        x = conv2d_resample(
            x,
            w.to(x.dtype),
            f=self.resample_filter,
            up=self.up,
            down=self.down,
            padding=self.padding,
            flip_weight=self.up == 1,
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"activation={self.activation}, up={self.up}, down={self.down}"
        )
