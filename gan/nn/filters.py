"""FIR filtering with up/down-sampling: upsample by zero insertion, pad, convolve, keep every n-th pixel.

StyleGAN2 resamples through the binomial [1, 3, 3, 1] low-pass filter instead of nearest/bilinear
(StyleGAN paper, section 2, after Zhang 2019 "Making convolutional networks shift-invariant again");
StyleGAN3 uses the same operation with Kaiser filters. `upfirdn2d` is the plain reference implementation
(the semantics of scipy.signal.upfirdn in 2-D), written as the definition reads: zero-stuff, pad, convolve
at full resolution, discard. `upfirdn2d` computes the same thing without the wasted work: upsampling is a
transposed convolution with stride `up` (the zeros are never multiplied), downsampling a convolution with
stride `down` (the discarded pixels are never computed), and a 1-D filter runs as two 1-D passes. Tests
compare the two over many shapes, factors, paddings, gains and flips.

Filters are float32 tensors: `[taps]` (separable, applied along x then y) or `[taps_y, taps_x]`.
Padding is given on the upsampled image as `p`, `(px, py)` or `(px0, px1, py0, py1)`; negative crops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

Scaling = int | Sequence[int]
Padding = int | Sequence[int]
FilterLike = torch.Tensor | np.ndarray | Sequence[float] | Sequence[Sequence[float]] | float | None


def setup_filter(
    f: FilterLike,
    device: torch.device | str | None = None,
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """Turn taps into a filter tensor for `upfirdn2d`.

    A 1-D list of fewer than 8 taps becomes its 2-D outer product (one small conv beats two), longer ones
    stay separable. `normalize` divides by the sum so that a constant image keeps its value (unit DC
    gain); `gain` scales the 2-D response, hence gain ** (ndim / 2) per tensor.
    """
    t = torch.as_tensor(1.0 if f is None else f, dtype=torch.float32)
    if t.ndim not in (0, 1, 2) or t.numel() == 0:
        raise ValueError(f"a filter must have 0, 1 or 2 dimensions and some taps, got shape {list(t.shape)}")
    if t.ndim == 0:
        t = t[None]
    if separable is None:
        separable = t.ndim == 1 and t.numel() >= 8
    if t.ndim == 1 and not separable:
        t = torch.outer(t, t)
    if t.ndim != (1 if separable else 2):
        raise ValueError("a 2-D filter cannot be made separable")
    if normalize:
        t = t / t.sum()
    if flip_filter:
        t = t.flip(list(range(t.ndim)))
    t = t * math.pow(gain, t.ndim / 2)
    # device None keeps the current default device, so that a network can be built on "meta" (shapes
    # only) to be checked against a file before its weights are allocated.
    return t if device is None else t.to(device=device)


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) in taps; a separable filter is square."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"a filter must be 1-D or 2-D, got shape {list(f.shape)}")
    return int(f.shape[-1]), int(f.shape[0])


def parse_scaling(s: Scaling) -> tuple[int, int]:
    sx, sy = (s, s) if isinstance(s, int) else tuple(s)
    if not (isinstance(sx, int) and isinstance(sy, int) and sx >= 1 and sy >= 1):
        raise ValueError(f"up/down factors must be integers >= 1, got {s!r}")
    return sx, sy


def parse_padding(p: Padding) -> tuple[int, int, int, int]:
    if isinstance(p, int):
        return p, p, p, p
    p = [int(v) for v in p]
    if len(p) == 2:
        return p[0], p[0], p[1], p[1]
    if len(p) == 4:
        return p[0], p[1], p[2], p[3]
    raise ValueError(f"padding must be an int, (x, y) or (x0, x1, y0, y1), got {p!r}")


def _check_upfirdn2d(x: torch.Tensor, f: torch.Tensor | None) -> torch.Tensor:
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects [N, C, H, W], got shape {list(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if f.dtype != torch.float32 or f.ndim not in (1, 2):
        raise ValueError(f"the filter must be a float32 tensor of 1 or 2 dims, got {f.dtype} {list(f.shape)}")
    return f


def upfirdn2d_reference(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scaling = 1,
    down: Scaling = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter, downsample each channel of `x` [N, C, H, W].

    `flip_filter=False` is a true convolution with `f`; the output keeps only pixels whose whole
    filter footprint lies in the padded, upsampled input. The plain definition, kept for tests.
    """
    f = _check_upfirdn2d(x, f)
    n, c, h, w = x.shape
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)

    # Upsample by inserting up-1 zeros after every pixel.
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(n, c, h * upy, w * upx)  # [N, C, H*up, W*up]

    # Pad (positive) or crop (negative).
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]

    # Convolve: conv2d correlates, so flip the taps unless the caller asked for correlation.
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].expand(c, 1, *f.shape), groups=c)
    else:
        x = F.conv2d(x, f[None, None, None, :].expand(c, 1, 1, -1), groups=c)  # along x
        x = F.conv2d(x, f[None, None, :, None].expand(c, 1, -1, 1), groups=c)  # along y

    # Downsample by keeping every down-th pixel.
    return x[:, :, ::downy, ::downx]


def _pad(x: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """F.pad that crops where negative and skips the copy when there is nothing to do.

    Pads before it crops: a crop on one side may reach into the zeros padded on the other.
    """
    grow, shrink = [max(p, 0) for p in pad], [min(p, 0) for p in pad]
    if any(grow) and any(shrink):
        return F.pad(F.pad(x, grow), shrink)
    return x if not any(pad) else F.pad(x, list(pad))


def _fir(
    x: torch.Tensor,
    taps: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
) -> torch.Tensor:
    """One upfirdn2d with a 2-D kernel `taps` [kh, kw] of true-convolution taps (gain folded in).

    A 1-D pass is the case kh == 1 or kw == 1, with up, down and padding 1, 1 and 0 along the other axis.
    """
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, padding
    c = x.shape[1]
    kh, kw = taps.shape
    if upx == 1 and upy == 1:
        # Correlating with the flipped taps at stride `down` computes exactly the kept pixels.
        x = _pad(x, [px0, px1, py0, py1])
        weight = taps.flip([0, 1])[None, None].expand(c, 1, kh, kw)
        return F.conv2d(x, weight, stride=(downy, downx), groups=c)

    # The transposed convolution y[m] = sum_i x[i] taps[m - i*up] is the full convolution of the
    # zero-stuffed image, indices 0 .. (H-1)*up + kh-1, without multiplying the zeros. The padded
    # reference keeps indices kh-1-py0 .. H*up+py1-1 of it: pad (or crop) each side to that range,
    # letting the transposed conv skip the crop both sides share.
    lo_x, hi_x = px0 - (kw - 1), px1 + upx - kw
    lo_y, hi_y = py0 - (kh - 1), py1 + upy - kh
    crop_x, crop_y = max(0, -max(lo_x, hi_x)), max(0, -max(lo_y, hi_y))
    weight = taps[None, None].expand(c, 1, kh, kw)
    x = F.conv_transpose2d(x, weight, stride=(upy, upx), padding=(crop_y, crop_x), groups=c)
    x = _pad(x, [lo_x + crop_x, hi_x + crop_x, lo_y + crop_y, hi_y + crop_y])
    return x if downx == 1 and downy == 1 else x[:, :, ::downy, ::downx]


def preferred_memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout a chain of depthwise filter convolutions runs fastest in on x's device.

    On CPU, oneDNN's depthwise convolutions vectorise over channels in channels-last and were 2-6x faster
    than in NCHW for the StyleGAN3 filters (measured: 64 channels, 12 taps, 84 px), but converting an
    NCHW tensor there and back costs more than that gain for a single filter (measured: StyleGAN2's
    4x4 filter on 512 x 257 x 257 took 320 ms in NCHW, 900 ms converted). So `upfirdn2d` keeps the
    caller's layout and a caller that chains filters (filtered_lrelu) converts once. On CUDA the layout
    stays as given.
    """
    return torch.channels_last if x.device.type == "cpu" else torch.contiguous_format


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scaling = 1,
    down: Scaling = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter, downsample each channel of `x` [N, C, H, W].

    `flip_filter=False` is a true convolution with `f`; the output keeps only pixels whose whole
    filter footprint lies in the padded, upsampled input. Same result as `upfirdn2d_reference` (up to
    float summation order), by strided and transposed convolutions, in x's memory layout.
    """
    f = _check_upfirdn2d(x, f)
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    taps = f.to(x.dtype) * (gain ** (f.ndim / 2))
    if flip_filter:  # correlation with f is convolution with f flipped
        taps = taps.flip(list(range(taps.ndim)))
    if taps.ndim == 2:
        return _fir(x, taps, (upx, upy), (downx, downy), (px0, px1, py0, py1))
    # Separable: T + T multiply-adds per pixel instead of T * T. Along x first: when upsampling, the
    # first pass then runs on the smaller image, and when downsampling it shrinks the image for the second.
    x = _fir(x, taps[None, :], (upx, 1), (downx, 1), (px0, px1, 0, 0))
    return _fir(x, taps[:, None], (1, upy), (1, downy), (0, 0, py0, py1))


def filter2d(
    x: torch.Tensor, f: torch.Tensor, padding: Padding = 0, flip_filter: bool = False, gain: float = 1
) -> torch.Tensor:
    """Filter without resampling; padding is added so that the output keeps the input size."""
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    pad = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain)


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scaling = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Upsample by `up` (output exactly up x the size); gain up**2 makes up for the inserted zeros."""
    upx, upy = parse_scaling(up)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    pad = [
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=(upx, upy), padding=pad, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    down: Scaling = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Low-pass filter, then keep every `down`-th pixel (output exactly 1/down the size)."""
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    pad = [
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=(downx, downy), padding=pad, flip_filter=flip_filter, gain=gain)
