"""The filtered nonlinearity of StyleGAN3 (paper Section 3.2, Figure 4).

A pointwise leaky ReLU creates frequencies above the Nyquist limit, which alias. StyleGAN3 therefore
applies it at a temporarily higher sampling rate: upsample with an ideal low-pass, bias + leaky ReLU
(+ gain and clamp), then low-pass and downsample to the layer's output rate, cropping the margins that
the filters leave invalid. This is the plain reference built on `gan.nn.filters.upfirdn2d`; a fused kernel
(the official `filtered_lrelu` CUDA op) can replace `filtered_lrelu` behind the same signature.
"""

from __future__ import annotations

import torch

from gan.errors import ConfigError
from gan.nn.filters import upfirdn2d

Padding = tuple[int, int, int, int]  # (x_lo, x_hi, y_lo, y_hi) on the upsampled image; negative crops


def _pad_or_crop(x: torch.Tensor, padding: Padding) -> torch.Tensor:
    """Zero-pad or crop [N, C, H, W] without filtering: the identity filter (one tap) case."""
    x_lo, x_hi, y_lo, y_hi = padding
    x = torch.nn.functional.pad(x, [max(x_lo, 0), max(x_hi, 0), max(y_lo, 0), max(y_hi, 0)])
    return x[:, :, max(-y_lo, 0) : x.shape[2] - max(-y_hi, 0), max(-x_lo, 0) : x.shape[3] - max(-x_hi, 0)]


def _resample(
    x: torch.Tensor, f: torch.Tensor | None, up: int, down: int, padding: Padding, gain: float
) -> torch.Tensor:
    if f is None:  # one tap: the layer designed no filter because the rate does not change
        if up != 1 or down != 1:
            raise ConfigError(f"resampling by up={up}, down={down} needs a low-pass filter")
        x = _pad_or_crop(x, padding)
        return x if gain == 1 else x * gain
    return upfirdn2d(x, f, up=up, down=down, padding=list(padding), gain=gain)


# Leaky ReLU scaled by `gain` and clamped to +-clamp, evaluated pointwise at the temporary rate.
def _lrelu(x: torch.Tensor, slope: float, gain: float, clamp: float | None) -> torch.Tensor:
    if slope != 1:
        x = torch.nn.functional.leaky_relu(x, slope)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def filtered_lrelu(
    x: torch.Tensor,
    up_filter: torch.Tensor | None,
    down_filter: torch.Tensor | None,
    bias: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: Padding = (0, 0, 0, 0),
    gain: float = 2**0.5,
    slope: float = 0.2,
    clamp: float | None = None,
) -> torch.Tensor:
    """x [N, C, H, W] -> bias, upsample by `up`, lrelu(slope) * gain, clamp, downsample by `down`.

    Output size: (H * up + y_lo + y_hi - (taps_up - 1) - (taps_down - 1) + down - 1) // down, alike for W.
    The upsampling gain up^2 keeps the signal's magnitude through zero insertion. With slope 1 and
    gain 1 this is the linear resampling the toRGB layer uses, still clamped as the official one is.
    """
    assert x.ndim == 4, f"x must be [N, C, H, W], got {list(x.shape)}"
    if up < 1 or down < 1:
        raise ConfigError(f"resampling factors must be >= 1, got up={up}, down={down}")
    if bias is not None:
        assert bias.shape == (x.shape[1],), f"bias must be [{x.shape[1]}], got {list(bias.shape)}"
        x = x + bias.to(x.dtype).reshape(1, -1, 1, 1)
    x = _resample(x, up_filter, up=up, down=1, padding=padding, gain=up**2)  # [N, C, H*up+pad-taps+1, ...]
    x = _lrelu(x, slope=slope, gain=gain, clamp=clamp)
    x = _resample(x, down_filter, up=1, down=down, padding=(0, 0, 0, 0), gain=1)  # [N, C, H_out, W_out]
    return x
