"""StyleGAN3 (alias-free) synthesis network, configs T and R (Karras et al. 2021, "Alias-Free GANs").

ws [N, num_ws, w_dim] -> image [N, img_channels, img_resolution, img_resolution]. A Fourier-feature input
(`input`, w index 0) is followed by `num_layers` modulated convolutions with filtered leaky ReLUs and a
final linear toRGB layer (w indices 1 .. num_layers + 1). Each layer works on a continuous signal
represented at its own sampling rate, with a cutoff f_c and stopband f_t that grow geometrically from the
first layer to the last `num_critical` layers, which are critically sampled at the image resolution
(paper Section 3.2, Figure 4, Appendix F). Config T uses 3x3 convolutions and separable Kaiser filters;
config R uses 1x1 convolutions and radially symmetric jinc filters for the downsampling (Section 3.3).

Parameter and buffer paths are the official ones (`input.freqs`, `L3_52_1024.affine.weight`,
`L3_52_1024.magnitude_ema`, `L3_52_1024.up_filter`, ...), so an official pickle loads key for key.
StyleGAN3 has no noise inputs: `noise_mode` is accepted for a common generator interface and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gan.config import StyleGAN3SynthesisConfig
from gan.errors import ConfigError
from gan.nn.equalized import FullyConnected
from gan.stylegan3.filtered_lrelu import filtered_lrelu
from gan.stylegan3.filters_design import design_lowpass_filter
from gan.stylegan3.fourier_input import FourierInput
from gan.vocabulary import NoiseMode, check_noise_mode


@dataclass(frozen=True)
class BandSchedule:
    """Per-layer band limits, index 0 = the Fourier input / first layer, index num_layers = toRGB.

    Frequencies are in cycles per image unit (the final image is one unit wide), sampling rates and
    sizes in pixels per unit and pixels.
    """

    cutoffs: tuple[float, ...]  # f_c[i]
    stopbands: tuple[float, ...]  # f_t[i]
    sampling_rates: tuple[int, ...]  # s[i]
    half_widths: tuple[float, ...]  # f_h[i], half the transition band
    sizes: tuple[int, ...]  # output size in pixels, margins included
    channels: tuple[int, ...]


# Appendix F.1: f_c and f_t follow a geometric progression from the first layer to the first critically
# sampled one, then stay at f_c = img_resolution / 2; s is the smallest power of two >= 2 f_t (at most
# the image resolution), and the transition band ends at max(f_t, s / 2).
def band_schedule(config: StyleGAN3SynthesisConfig, img_resolution: int, img_channels: int) -> BandSchedule:
    n = config.num_layers
    if n < 1 or not 0 <= config.num_critical < n:
        raise ConfigError(
            f"need num_layers >= 1 and 0 <= num_critical < num_layers, got {n}, {config.num_critical}"
        )
    last_cutoff = img_resolution / 2  # f_{c,N}
    last_stopband = last_cutoff * config.last_stopband_rel  # f_{t,N}
    if not 0 < config.first_cutoff < last_cutoff:
        raise ConfigError(f"first_cutoff must lie in (0, {last_cutoff:g}), got {config.first_cutoff:g}")
    # Same float64 numpy arithmetic as the official code, so that the designed filter taps are identical.
    exponents = np.minimum(np.arange(n + 1) / (n - config.num_critical), 1)
    cutoffs = config.first_cutoff * (last_cutoff / config.first_cutoff) ** exponents
    stopbands = config.first_stopband * (last_stopband / config.first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + config.margin_size * 2
    sizes[-2:] = img_resolution  # the last layer and toRGB produce the image itself, no margin
    channels = np.rint(np.minimum((config.channel_base / 2) / cutoffs, config.channel_max))
    channels[-1] = img_channels
    if channels.min() < 1:
        raise ConfigError(
            f"channel_base={config.channel_base} leaves a layer without channels at {img_resolution} px"
        )
    return BandSchedule(
        cutoffs=tuple(float(v) for v in cutoffs),
        stopbands=tuple(float(v) for v in stopbands),
        sampling_rates=tuple(int(v) for v in sampling_rates),
        half_widths=tuple(float(v) for v in half_widths),
        sizes=tuple(int(v) for v in sizes),
        channels=tuple(int(v) for v in channels),
    )


# Modulated convolution as StyleGAN3 writes it (its `networks_stylegan3.modulated_conv2d`): unlike
# StyleGAN2's, weights and styles are first normalised to unit RMS so that fp16 cannot overflow
# (demodulation makes the result scale-invariant anyway), and an input gain 1/sqrt(magnitude EMA)
# is folded into the weights after demodulation, normalising the layer's input magnitude.
def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    padding: int = 0,
    input_gain: torch.Tensor | None = None,
) -> torch.Tensor:
    """x [N, I, H, W], weight [O, I, k, k], styles [N, I], input_gain [] or [I] -> [N, O, H', W']."""
    n, in_channels = x.shape[:2]
    out_channels, _, kh, kw = weight.shape
    assert weight.shape[1] == in_channels, f"weight {list(weight.shape)} does not take {in_channels} channels"
    assert styles.shape == (n, in_channels), f"styles must be [{n}, {in_channels}], got {list(styles.shape)}"

    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    w = weight.unsqueeze(0) * styles.reshape(n, 1, in_channels, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    if input_gain is not None:
        w = w * input_gain.expand(n, in_channels).reshape(n, 1, in_channels, 1, 1)

    # One grouped convolution: each sample of the batch is a group with its own weights.
    x = x.reshape(1, n * in_channels, *x.shape[2:])
    w = w.reshape(n * out_channels, in_channels, kh, kw)
    x = nn.functional.conv2d(x, w.to(x.dtype), padding=padding, groups=n)
    return x.reshape(n, out_channels, *x.shape[2:])


class SynthesisLayer(nn.Module):
    """One alias-free layer: modulated conv at the input rate, filtered lrelu to the output rate."""

    magnitude_ema: torch.Tensor  # [], the EMA of the input's mean square
    up_filter: torch.Tensor | None  # [taps]; None (absent from the state dict) when up_factor is 1
    down_filter: torch.Tensor | None  # [taps] or, radial, [taps, taps]

    def __init__(
        self,
        w_dim: int,
        is_torgb: bool,
        is_critically_sampled: bool,
        use_fp16: bool,
        in_channels: int,
        out_channels: int,
        in_size: int,
        out_size: int,
        in_sampling_rate: int,
        out_sampling_rate: int,
        in_cutoff: float,
        out_cutoff: float,
        in_half_width: float,
        out_half_width: float,
        conv_kernel: int = 3,
        filter_size: int = 6,
        lrelu_upsampling: int = 2,
        use_radial_filters: bool = False,
        conv_clamp: float | None = 256,
        magnitude_ema_beta: float = 0.999,
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = in_size
        self.out_size = out_size
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        self.in_cutoff = in_cutoff
        self.out_cutoff = out_cutoff
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta

        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)  # styles start near 1
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel])
        )
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        # The nonlinearity runs at a rate lrelu_upsampling x the higher of the two rates (toRGB is linear
        # and needs no headroom); both factors must be integers.
        tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.up_factor = _integer_ratio(tmp_sampling_rate, in_sampling_rate, "upsampling")
        self.down_factor = _integer_ratio(tmp_sampling_rate, out_sampling_rate, "downsampling")
        self.tmp_sampling_rate = tmp_sampling_rate

        # Filters have `filter_size` taps per sample of the lower rate. Config R's radial (jinc) filter is
        # used only to downsample, and not in the critically sampled layers, which stay separable (Sec 3.3).
        up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = use_radial_filters and not is_critically_sampled
        self.register_buffer(
            "up_filter",
            design_lowpass_filter(up_taps, in_cutoff, in_half_width * 2, tmp_sampling_rate),
        )
        self.register_buffer(
            "down_filter",
            design_lowpass_filter(
                down_taps, out_cutoff, out_half_width * 2, tmp_sampling_rate, radial=self.down_radial
            ),
        )

        # Appendix C.3: pad so that the output, after the size changes of conv and filters, is exactly
        # out_size, with sample positions shifted to the symmetric (pixel-centre) interpretation.
        pad_total = (out_size - 1) * self.down_factor + 1  # size wanted before downsampling
        pad_total -= (
            in_size + self.conv_kernel - 1
        ) * self.up_factor  # size after the full conv + upsampling
        pad_total += up_taps + down_taps - 2  # what the two filters trim
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = (pad_lo, pad_hi, pad_lo, pad_hi)

    # Appendix F: each layer divides its input by the square root of an EMA of its mean square, tracked
    # during training (update_emas) and frozen otherwise, keeping activations near unit magnitude.
    def _update_magnitude_ema(self, x: torch.Tensor) -> None:
        magnitude = x.detach().to(torch.float32).square().mean()
        self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.magnitude_ema_beta))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, force_fp32: bool = False, update_emas: bool = False
    ) -> torch.Tensor:
        """x [N, in_channels, in_size, in_size], w [N, w_dim] -> [N, out_channels, out_size, out_size]."""
        assert x.shape[1:] == (self.in_channels, self.in_size, self.in_size), (
            f"x must be [N, {self.in_channels}, {self.in_size}, {self.in_size}], got {list(x.shape)}"
        )
        assert w.shape == (x.shape[0], self.w_dim), (
            f"w must be [{x.shape[0]}, {self.w_dim}], got {list(w.shape)}"
        )
        if update_emas:
            self._update_magnitude_ema(x)
        input_gain = self.magnitude_ema.rsqrt()

        styles = self.affine(w)  # [N, in_channels]
        if self.is_torgb:  # not demodulated, so it takes the equalized-rate gain 1/sqrt(fan_in) instead
            styles = styles * (1 / np.sqrt(self.in_channels * self.conv_kernel**2))

        use_fp16 = self.use_fp16 and not force_fp32 and x.device.type == "cuda"
        dtype = torch.float16 if use_fp16 else torch.float32
        x = modulated_conv2d(
            x.to(dtype),
            self.weight,
            styles,
            demodulate=not self.is_torgb,
            padding=self.conv_kernel - 1,
            input_gain=input_gain,
        )  # [N, out_channels, in_size + k - 1, ...]
        x = filtered_lrelu(
            x,
            self.up_filter,
            self.down_filter,
            self.bias,
            up=self.up_factor,
            down=self.down_factor,
            padding=self.padding,
            gain=1 if self.is_torgb else np.sqrt(2),
            slope=1 if self.is_torgb else 0.2,
            clamp=self.conv_clamp,
        )  # [N, out_channels, out_size, out_size]
        assert x.shape[2:] == (self.out_size, self.out_size), f"layer produced {list(x.shape)}"
        return x

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}x{self.in_size}@{self.in_sampling_rate}, "
            f"out={self.out_channels}x{self.out_size}@{self.out_sampling_rate}, "
            f"up={self.up_factor}, down={self.down_factor}, torgb={self.is_torgb}, "
            f"critical={self.is_critically_sampled}, radial={self.down_radial}, fp16={self.use_fp16}"
        )


def _integer_ratio(high: int, low: int, what: str) -> int:
    factor = int(np.rint(high / low))
    if low * factor != high:
        raise ConfigError(f"{what} from rate {low} to {high} is not by an integer factor")
    return factor


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> images [N, img_channels, img_resolution, img_resolution], about [-1, 1]."""

    def __init__(
        self, w_dim: int, img_resolution: int, img_channels: int, config: StyleGAN3SynthesisConfig
    ) -> None:
        super().__init__()
        if not isinstance(config, StyleGAN3SynthesisConfig):
            raise ConfigError(
                f"StyleGAN3 synthesis needs a StyleGAN3SynthesisConfig, got {type(config).__name__}"
            )
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.config = config
        self.num_layers = config.num_layers
        self.num_ws = config.num_layers + 2  # the input, num_layers layers, toRGB
        self.output_scale = config.output_scale
        self.schedule = band_schedule(config, img_resolution, img_channels)
        s = self.schedule

        self.input = FourierInput(
            w_dim=w_dim,
            channels=s.channels[0],
            size=s.sizes[0],
            sampling_rate=s.sampling_rates[0],
            bandwidth=s.cutoffs[0],
        )
        self.layer_names: list[str] = []
        for idx in range(config.num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim=w_dim,
                is_torgb=idx == config.num_layers,
                is_critically_sampled=idx >= config.num_layers - config.num_critical,
                # fp16 where the rate is within the top num_fp16_res octaves below the image resolution.
                use_fp16=s.sampling_rates[idx] * 2**config.num_fp16_res > img_resolution,
                in_channels=s.channels[prev],
                out_channels=s.channels[idx],
                in_size=s.sizes[prev],
                out_size=s.sizes[idx],
                in_sampling_rate=s.sampling_rates[prev],
                out_sampling_rate=s.sampling_rates[idx],
                in_cutoff=s.cutoffs[prev],
                out_cutoff=s.cutoffs[idx],
                in_half_width=s.half_widths[prev],
                out_half_width=s.half_widths[idx],
                conv_kernel=config.conv_kernel,
                filter_size=config.filter_size,
                lrelu_upsampling=config.lrelu_upsampling,
                use_radial_filters=config.use_radial_filters,
                conv_clamp=config.conv_clamp,
                magnitude_ema_beta=config.magnitude_ema_beta,
            )
            name = f"L{idx}_{layer.out_size}_{layer.out_channels}"
            self.add_module(name, layer)
            self.layer_names.append(name)

    def layers(self) -> list[SynthesisLayer]:
        """The layers in order (they are attributes, not a ModuleList, to keep the official paths)."""
        return [getattr(self, name) for name in self.layer_names]

    # Where each w acts, for naming style ranges: w index 0 drives the input, index i + 1 layer i.
    @property
    def ws_sizes(self) -> tuple[int, ...]:
        """Output size in pixels (margins included) of the part consuming each w index."""
        return (self.schedule.sizes[0], *self.schedule.sizes)

    @property
    def ws_sampling_rates(self) -> tuple[int, ...]:
        """Sampling rate of the signal each w index produces (pixels per image width, without margins)."""
        return (self.schedule.sampling_rates[0], *self.schedule.sampling_rates)

    @property
    def ws_cutoffs(self) -> tuple[float, ...]:
        """Cutoff f_c of each w index's output; 2 f_c is the resolution whose content it can hold."""
        return (self.schedule.cutoffs[0], *self.schedule.cutoffs)

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "const",
        force_fp32: bool = False,
        update_emas: bool = False,
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`noise_mode` is ignored (StyleGAN3 has no noise inputs); `transform` ([3, 3] or [N, 3, 3],
        as from `fourier_input.make_transform`) replaces the stored `input.transform` for this call."""
        check_noise_mode(noise_mode)
        assert ws.ndim == 3 and ws.shape[1:] == (self.num_ws, self.w_dim), (
            f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}"
        )
        ws_list = ws.to(torch.float32).unbind(dim=1)
        x: torch.Tensor = self.input(ws_list[0], transform=transform)  # [N, C0, size0, size0]
        for layer, w in zip(self.layers(), ws_list[1:], strict=True):
            x = layer(x, w, force_fp32=force_fp32, update_emas=update_emas)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)  # [N, img_channels, img_resolution, img_resolution]

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
            f"img_channels={self.img_channels}, num_layers={self.num_layers}"
        )
