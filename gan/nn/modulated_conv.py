"""Modulated convolution with weight demodulation (StyleGAN2 paper, section 2.2, equations 1-3).

Each sample's style s scales the input channels of the shared weight, w'_ijk = s_i * w_ijk (eq. 1), and
demodulation divides each output channel by its L2 norm, w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps)
(eq. 3), which replaces AdaIN's instance normalization without its droplet artifacts.

Two routes compute the same thing: `fused=True` builds per-sample weights and runs one grouped conv
(the official inference route, kept on CUDA); `fused=False` scales activations before and after a shared conv, which
trains faster because the weight gradient stays shared, and on the CPU also infers faster: the shared
weight is constant, so the convolution can reuse work done on it once (`gan.nn.winograd`).
"""

from __future__ import annotations

import math

import torch

from gan.nn import winograd
from gan.nn.conv2d_resample import conv2d_resample
from gan.nn.filters import Padding, parse_padding


def modulate(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """Eq. 1: w' = s_i * w per sample. weight [O, I, k, k], styles [N, I] -> [N, O, I, k, k]."""
    return weight.unsqueeze(0) * styles.reshape(styles.shape[0], 1, -1, 1, 1)


def demodulation_coefficients(w: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 3: 1 / sqrt(sum over I, k, k of w'^2 + eps). w [N, O, I, k, k] -> [N, O]."""
    return (w.square().sum(dim=[2, 3, 4]) + eps).rsqrt()


def demodulation_coefficients_from_styles(
    weight: torch.Tensor, styles: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Eq. 3 without building w': sum over i, k of (s_i w_oik)^2 = sum_i s_i^2 (sum_k w_oik^2), one
    [N, I] x [I, O] product instead of an [N, O, I, k, k] tensor. weight [O, I, k, k], styles [N, I] -> [N, O]."""
    return (styles.square() @ weight.square().sum(dim=[2, 3]).t() + eps).rsqrt()


def _check_shapes(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor) -> None:
    if weight.shape[1] != x.shape[1] or styles.shape != (x.shape[0], x.shape[1]):
        raise ValueError(
            f"shapes disagree: x {list(x.shape)}, weight {list(weight.shape)}, styles {list(styles.shape)}"
        )


def shared_weight_modconv(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    down: int = 1,
    resample_filter: torch.Tensor | None = None,
    padding: Padding = 0,
    flip_weight: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The `fused=False` route stopped before its last multiply: (conv(x * s, w), d) with d [N, O] the
    demodulation coefficients (None without demodulation). The result is x' * d[..., None, None]; a
    caller that adds bias and noise next can fold that multiply into the same pass (torch.addcmul).
    fp16 callers go through `modulated_conv2d`, which first rescales weight and styles against overflow."""
    _check_shapes(x, weight, styles)
    d = demodulation_coefficients_from_styles(weight, styles) if demodulate else None
    pad = parse_padding(padding)
    # The Winograd routes (CPU inference); the styles ride along their input copy.
    if down == 1 and winograd.eligible(x, weight, 1, (pad[0], pad[0])):
        if up == 1 and flip_weight and len(set(pad)) == 1:
            return winograd.conv3x3(x, winograd.cached_transform(weight), in_scale=styles), d
        if up == 2 and not flip_weight and winograd.fits_up2(x, weight, resample_filter, pad):
            assert resample_filter is not None
            u = winograd.cached_up2_transform(weight, resample_filter)
            return winograd.up2_conv3x3(x, u, in_scale=styles), d
    x = x * styles.to(x.dtype).reshape(x.shape[0], -1, 1, 1)
    x = conv2d_resample(
        x, weight.to(x.dtype), resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight
    )
    return x, d


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    down: int = 1,
    resample_filter: torch.Tensor | None = None,
    padding: Padding = 0,
    flip_weight: bool = True,
    fused: bool = True,
) -> torch.Tensor:
    """x [N, I, H, W], weight [O, I, k, k], styles [N, I] -> [N, O, H', W'] (H' = H * up / down with
    'same' padding). `resample_filter` comes from `setup_filter`."""
    _check_shapes(x, weight, styles)
    n, in_channels = x.shape[0], x.shape[1]
    out_channels, _, kh, kw = weight.shape

    # fp16: scale weight and styles to max-abs 1 first so that sum(w'^2) cannot overflow; demodulation
    # removes any such per-sample, per-output-channel scale again.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (
            1 / math.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    def conv(x: torch.Tensor, w: torch.Tensor, groups: int = 1) -> torch.Tensor:
        return conv2d_resample(
            x,
            w.to(x.dtype),
            resample_filter,
            up=up,
            down=down,
            padding=padding,
            groups=groups,
            flip_weight=flip_weight,
        )

    if not fused:
        x, d = shared_weight_modconv(
            x, weight, styles, demodulate, up, down, resample_filter, padding, flip_weight
        )
        return x if d is None else x * d.to(x.dtype).reshape(n, -1, 1, 1)

    if demodulate:  # eqs. 1 and 3 in one pass over the per-sample weights: w'' = (s_i d_o) w
        d = demodulation_coefficients_from_styles(weight, styles)  # [N, O]
        w = weight.unsqueeze(0) * (d.reshape(n, -1, 1, 1, 1) * styles.reshape(n, 1, -1, 1, 1))
    else:
        w = modulate(weight, styles)  # [N, O, I, k, k]
    # One grouped conv: the batch becomes channel groups, each with its own weight.
    x = x.reshape(1, n * in_channels, *x.shape[2:])  # [1, N*I, H, W]
    w = w.reshape(n * out_channels, in_channels, kh, kw)  # [N*O, I, k, k]
    x = conv(x, w, groups=n)
    return x.reshape(n, out_channels, *x.shape[2:])
