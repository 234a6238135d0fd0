"""StyleGAN2(-ADA) synthesis network: ws [N, num_ws, w_dim] -> images [N, C, R, R].

StyleGAN2 paper, section 2 and figure 7: a learned 4x4 constant, then one block per resolution
8, 16, ..., R, each with two modulated 3x3 convs (the first upsampling by 2 through the [1, 3, 3, 1]
filter), per-pixel noise with a learned strength, and a toRGB layer. The architectures of section 4.1:
`skip` sums upsampled toRGB outputs of every block (the default), `resnet` adds a 1x1 residual branch
scaled by sqrt(1/2) and has toRGB on the last block only, `orig` is the plain chain.

w indices: block b4 takes ws[0] (conv1) and ws[1] (toRGB); every later block takes two ws for its convs
and the next one for its toRGB, i.e. a block's toRGB shares its w with the next block's first conv.

Parameter paths are the official ones (`b{res}.conv0.affine.weight`, `b4.const`, `b{res}.torgb.*`,
`b{res}.skip.weight`, buffers `noise_const` and `resample_filter`) so that loading a pickle's state_dict
is a key-for-key copy.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gan.config import Activation, StyleGAN2SynthesisConfig, SynthesisArchitecture
from gan.errors import ConfigError
from gan.nn.bias_act import bias_act, default_gain
from gan.nn.equalized import Conv2d, FullyConnected
from gan.nn.filters import setup_filter, upsample2d
from gan.nn.modulated_conv import modulated_conv2d, shared_weight_modconv
from gan.vocabulary import NoiseMode, check_noise_mode


def fp16_resolution(img_resolution: int, num_fp16_res: int) -> int:
    """The lowest resolution that runs in fp16: the top `num_fp16_res` blocks, never below 8 px."""
    return max(int(2.0 ** (int(math.log2(img_resolution)) + 1 - num_fp16_res)), 8)


def block_dtype(use_fp16: bool, device: torch.device, force_fp32: bool) -> torch.dtype:
    """fp16 only on CUDA: CPU half convolutions are slow and lose precision for no gain."""
    return torch.float16 if use_fp16 and device.type == "cuda" and not force_fp32 else torch.float32


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling by 2) + noise + bias + lrelu, clamped to conv_clamp."""

    resample_filter: torch.Tensor
    noise_const: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: Activation = "lrelu",
        resample_filter: tuple[int, ...] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = default_gain(activation)

        # Styles start at 1 (bias_init) so that modulation begins as the identity.
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: NoiseMode = "const",
        fused_modconv: bool = True,
        gain: float = 1.0,
    ) -> torch.Tensor:
        """x [N, in_channels, res/up, res/up], w [N, w_dim] -> [N, out_channels, res, res]."""
        in_res = self.resolution // self.up
        if x.shape[1:] != (self.in_channels, in_res, in_res):
            raise ValueError(f"expected x [N, {self.in_channels}, {in_res}, {in_res}], got {list(x.shape)}")
        styles = self.affine(w)  # [N, in_channels]
        flip_weight = self.up == 1  # the official layers truly convolve when upsampling
        scale: torch.Tensor | None = None  # the demodulation multiply, still to do when not fused
        if fused_modconv or x.dtype != torch.float32:
            x = modulated_conv2d(
                x,
                self.weight,
                styles,
                up=self.up,
                resample_filter=self.resample_filter,
                padding=self.padding,
                flip_weight=flip_weight,
                fused=fused_modconv,
            )
        else:
            x, scale = shared_weight_modconv(
                x,
                self.weight,
                styles,
                up=self.up,
                resample_filter=self.resample_filter,
                padding=self.padding,
                flip_weight=flip_weight,
            )
        return self._noise_bias_act(x, scale, self._noise(x, noise_mode), gain)

    def _noise_bias_act(
        self, x: torch.Tensor, scale: torch.Tensor | None, noise: torch.Tensor | None, gain: float
    ) -> torch.Tensor:
        """act((x * scale) + noise + bias) * act_gain * gain, clamped: the layer's elementwise tail.

        Memory traffic, not arithmetic, is its cost, so it is done in as few passes over x as the
        activation allows: noise and bias are summed on their own (smaller) shapes first, and for a
        positively homogeneous activation (g * act(z) = act(g * z) for g > 0) the gain is folded into
        them and into the scale, leaving one addcmul and one in-place activation.
        """
        offset = self.bias.to(x.dtype).reshape(-1, 1, 1)
        if noise is not None:
            offset = noise.to(x.dtype) + offset  # [O, H, W] ([N, O, H, W] for random noise)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        act_gain = self.act_gain * gain
        if self.activation in ("linear", "relu", "lrelu") and act_gain > 0:
            offset = offset * act_gain
            scale = None if scale is None else scale * act_gain
            x_gain, act_gain = act_gain, 1.0
        else:
            x_gain = 1.0
        if (
            offset.shape[-1] > 1
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            # Match x's layout (the Winograd route's output): a broadcast across layouts ran 2.7x slower.
            offset = offset.reshape(-1, *x.shape[1:]).contiguous(memory_format=torch.channels_last)
        if scale is None:
            y = torch.add(offset, x, alpha=x_gain)
        else:
            y = torch.addcmul(offset, x, scale.to(x.dtype).reshape(scale.shape[0], -1, 1, 1))
        return bias_act(y, None, act=self.activation, gain=act_gain, clamp=clamp, inplace=True)

    # Noise inputs (StyleGAN paper, section 3.2): per-pixel N(0, 1), one channel broadcast to all, scaled
    # by the learned strength; "const" reuses the fixed draw stored with the network.
    def _noise(self, x: torch.Tensor, noise_mode: NoiseMode) -> torch.Tensor | None:
        if not self.use_noise or noise_mode == "none":
            return None
        if noise_mode == "random":
            shape = [x.shape[0], 1, self.resolution, self.resolution]
            return torch.randn(shape, device=x.device) * self.noise_strength
        return self.noise_const * self.noise_strength  # [res, res]

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"resolution={self.resolution}, up={self.up}, activation={self.activation}"
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation (it outputs colours, not features)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        # Without demodulation the equalized-lr gain must be applied explicitly; on the styles is cheapest.
        styles = self.affine(w) * self.weight_gain  # [N, in_channels]
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: [const | conv0 (up 2)] -> conv1 -> toRGB, per the architecture."""

    resample_filter: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: SynthesisArchitecture = "skip",
        resample_filter: tuple[int, ...] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        use_noise: bool = True,
        activation: Activation = "lrelu",
    ) -> None:
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise ConfigError(f"synthesis architecture must be orig, skip or resnet, got {architecture!r}")
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0

        def layer(in_ch: int, out_ch: int, up: int = 1) -> SynthesisLayer:
            return SynthesisLayer(
                in_ch,
                out_ch,
                w_dim=w_dim,
                resolution=resolution,
                up=up,
                use_noise=use_noise,
                activation=activation,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
            )

        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = layer(in_channels, out_channels, up=2)
            self.num_conv += 1
        self.conv1 = layer(out_channels, out_channels)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2d(
                in_channels, out_channels, kernel_size=1, bias=False, up=2, resample_filter=resample_filter
            )

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "const",
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [N, in_channels, res/2, res/2] (None for b4), img [N, C, res/2, res/2] or None,
        ws [N, num_conv + num_torgb, w_dim] -> (x [N, out_channels, res, res], img [N, C, res, res])."""
        if ws.shape[1:] != (self.num_conv + self.num_torgb, self.w_dim):
            raise ValueError(
                f"block b{self.resolution} expects ws [N, {self.num_conv + self.num_torgb}, {self.w_dim}]"
            )
        w_iter = iter(ws.unbind(dim=1))
        dtype = block_dtype(self.use_fp16, ws.device, force_fp32)
        if fused_modconv is None:
            # Grouped conv is fastest for inference on CUDA; training keeps the weight shared (cheaper
            # backward), fp16 with a batch avoids the per-sample weights that could overflow, and the CPU
            # keeps it shared too, because a constant weight lets the 3x3 convs run as Winograd GEMMs on
            # a transform done once (gan.nn.winograd; 64 px batch 1 about 1.5x faster on our CPU).
            fused_modconv = (
                not self.training and ws.device.type != "cpu" and (dtype == torch.float32 or ws.shape[0] == 1)
            )

        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])  # [N, C, 4, 4]
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        else:
            assert x is not None
            x = x.to(dtype)
            # resnet: both branches scaled by sqrt(1/2) so that their sum keeps unit variance.
            gain = math.sqrt(0.5) if self.architecture == "resnet" else 1.0
            y = self.skip(x, gain=gain) if self.architecture == "resnet" else None
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv, gain=gain)
            if y is not None:
                x = y + x

        # Skip architecture: the image so far is upsampled and this block's toRGB output is added.
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
            img = img + y if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}"


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> img [N, img_channels, img_resolution, img_resolution], about [-1, 1]."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        config: StyleGAN2SynthesisConfig = StyleGAN2SynthesisConfig(),
    ) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ConfigError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.config = config
        self.block_resolutions = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
        fp16_res = fp16_resolution(img_resolution, config.num_fp16_res)

        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(
                in_channels=config.channels(res // 2) if res > 4 else 0,
                out_channels=config.channels(res),
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=is_last,
                architecture=config.architecture,
                resample_filter=config.resample_filter,
                conv_clamp=config.conv_clamp,
                use_fp16=res >= fp16_res,
                use_noise=config.use_noise,
                activation=config.activation,
            )
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "const",
        force_fp32: bool = False,
        update_emas: bool = False,
        fused_modconv: bool | None = None,
    ) -> torch.Tensor:
        """`update_emas` is accepted for the common interface; StyleGAN2 synthesis tracks no EMA."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        check_noise_mode(noise_mode)
        ws = ws.to(torch.float32)
        x: torch.Tensor | None = None
        img: torch.Tensor | None = None
        w_idx = 0
        for res in self.block_resolutions:
            block: SynthesisBlock = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)  # [N, 2 or 3, w_dim]
            w_idx += block.num_conv
            x, img = block(
                x, img, block_ws, noise_mode=noise_mode, force_fp32=force_fp32, fused_modconv=fused_modconv
            )
        assert img is not None
        return img

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
            f"img_channels={self.img_channels}, num_fp16_res={self.config.num_fp16_res}"
        )
