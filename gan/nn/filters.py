"""FIR filtering with up/down-sampling: upsample by zero insertion, pad, convolve, keep every n-th pixel.

StyleGAN2 resamples through the binomial [1, 3, 3, 1] low-pass filter instead of nearest/bilinear
(StyleGAN paper, section 2, after Zhang 2019 "Making convolutional networks shift-invariant again");
StyleGAN3 uses the same operation with Kaiser filters. `upfirdn2d` is the plain reference implementation
(the semantics of scipy.signal.upfirdn in 2-D); a fused kernel can later replace it behind this signature.

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
    device: torch.device | str = "cpu",
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
    return t.to(device=device)


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
    filter footprint lies in the padded, upsampled input.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects [N, C, H, W], got shape {list(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if f.dtype != torch.float32 or f.ndim not in (1, 2):
        raise ValueError(f"the filter must be a float32 tensor of 1 or 2 dims, got {f.dtype} {list(f.shape)}")
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
