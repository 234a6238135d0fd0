"""The filtered nonlinearity of StyleGAN3 (paper Section 3.2, Figure 4).

A pointwise leaky ReLU creates frequencies above the Nyquist limit, which alias. StyleGAN3 therefore
applies it at a temporarily higher sampling rate: upsample with an ideal low-pass, bias + leaky ReLU
(+ gain and clamp), then low-pass and downsample to the layer's output rate, cropping the margins that
the filters leave invalid. `filtered_lrelu_reference` is the plain definition built on
`upfirdn2d_reference`; `filtered_lrelu` computes the same by transposed and strided convolutions in the
layout the device filters fastest in, with the nonlinearity applied in place on the upsampled image,
the largest tensor of the layer (4x or 16x the input). The official code fuses all of it in one CUDA
kernel; this stays plain PyTorch.
"""

from __future__ import annotations

import torch

from gan.errors import ConfigError
from gan.nn.filters import preferred_memory_format, upfirdn2d, upfirdn2d_reference

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
    return upfirdn2d_reference(x, f, up=up, down=down, padding=list(padding), gain=gain)


# Leaky ReLU scaled by `gain` and clamped to +-clamp, evaluated pointwise at the temporary rate.
def _lrelu(x: torch.Tensor, slope: float, gain: float, clamp: float | None) -> torch.Tensor:
    if slope != 1:
        x = torch.nn.functional.leaky_relu(x, slope)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _check(x: torch.Tensor, bias: torch.Tensor | None, up: int, down: int) -> None:
    assert x.ndim == 4, f"x must be [N, C, H, W], got {list(x.shape)}"
    if up < 1 or down < 1:
        raise ConfigError(f"resampling factors must be >= 1, got up={up}, down={down}")
    if bias is not None:
        assert bias.shape == (x.shape[1],), f"bias must be [{x.shape[1]}], got {list(bias.shape)}"


def filtered_lrelu_reference(
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
    _check(x, bias, up, down)
    if bias is not None:
        x = x + bias.to(x.dtype).reshape(1, -1, 1, 1)
    x = _resample(x, up_filter, up=up, down=1, padding=padding, gain=up**2)  # [N, C, H*up+pad-taps+1, ...]
    x = _lrelu(x, slope=slope, gain=gain, clamp=clamp)
    x = _resample(x, down_filter, up=1, down=down, padding=(0, 0, 0, 0), gain=1)  # [N, C, H_out, W_out]
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
    """Same result as `filtered_lrelu_reference` (up to float rounding); the output has x's layout."""
    _check(x, bias, up, down)
    if (up_filter is None and up != 1) or (down_filter is None and down != 1):
        raise ConfigError(f"resampling by up={up}, down={down} needs a low-pass filter")
    given = (
        torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    )
    x = x.contiguous(memory_format=preferred_memory_format(x))
    if bias is not None:
        x = x + bias.to(x.dtype).reshape(1, -1, 1, 1)

    if up_filter is not None:
        x = upfirdn2d(x, up_filter, up=up, padding=padding, gain=up**2)
    elif any(padding):
        x = _pad_or_crop(x, padding)
    owned = up_filter is not None or bias is not None  # a crop alone would be a view of the caller's x

    # lrelu, gain and clamp on the largest tensor of the layer: in place where x is ours, and with the gain
    # moved into the downsampling filter when there is one, since for gain > 0
    # clamp(gain * v, -c, c) = gain * clamp(v, -c / gain, c / gain) (equal up to a rounding of c / gain).
    fold_gain = down_filter is not None and gain > 0
    if slope != 1:
        inplace = owned and slope > 0  # autograd recomputes the mask from the output only when slope > 0
        x = torch.nn.functional.leaky_relu(x, slope, inplace=inplace)
        owned = True
    if not fold_gain and gain != 1:
        x = x * gain
        owned = True
    if clamp is not None:
        limit = clamp / gain if fold_gain else clamp
        # leaky_relu's backward reads its output, so under autograd the clamp must not overwrite it.
        inplace = owned and not (torch.is_grad_enabled() and x.requires_grad)
        x = x.clamp_(-limit, limit) if inplace else x.clamp(-limit, limit)

    if down_filter is not None:
        x = upfirdn2d(x, down_filter, down=down, gain=gain if fold_gain else 1)
    return x.contiguous(memory_format=given)  # [N, C, H_out, W_out]
