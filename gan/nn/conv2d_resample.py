"""2-D convolution fused with FIR up/down-sampling, padding applied once on the upsampled grid.

The meaning is always that of `conv2d_resample_ref`: upfirdn2d(up, pad, gain up**2) -> conv -> keep
every `down`-th pixel after filtering. `conv2d_resample` computes the same thing by cheaper routes (a
strided or transposed convolution instead of convolving the zero-stuffed or full-size image), which
matters because the up/down layers are the largest convolutions in both networks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gan.nn import winograd
from gan.nn.filters import Padding, filter_size, parse_padding, upfirdn2d, upfirdn2d_reference


def _resample_padding(
    f: torch.Tensor | None, up: int, down: int, padding: Padding
) -> tuple[int, int, int, int]:
    """Padding on the upsampled grid that makes the output exactly up/down x the input (the filter's
    group delay is split between both sides)."""
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    return px0, px1, py0, py1


def _check(x: torch.Tensor, w: torch.Tensor, up: int, down: int, groups: int) -> None:
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(
            f"expected x [N, C, H, W] and w [O, I, kh, kw], got {list(x.shape)}, {list(w.shape)}"
        )
    if x.shape[1] != w.shape[1] * groups:
        raise ValueError(f"x has {x.shape[1]} channels, w expects {w.shape[1]} x {groups} groups")
    if not (isinstance(up, int) and isinstance(down, int) and up >= 1 and down >= 1):
        raise ValueError(f"up and down must be integers >= 1, got {up!r}, {down!r}")


def conv2d_resample_ref(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    groups: int = 1,
    flip_weight: bool = True,
) -> torch.Tensor:
    """Reference: x [N, I*groups, H, W], w [O, I, kh, kw] -> [N, O, H*up/down, W*up/down] for 'same'
    padding. `flip_weight=True` is correlation (as torch's conv2d), False a true convolution."""
    _check(x, w, up, down, groups)
    pad = _resample_padding(f, up, down, padding)
    if not flip_weight:
        w = w.flip([2, 3])
    x = upfirdn2d_reference(x, f if up > 1 else None, up=up, padding=pad, gain=up**2)
    x = F.conv2d(x, w.to(x.dtype), groups=groups)
    if down > 1:
        x = upfirdn2d_reference(x, f, down=down)
    return x


def _transpose_weight(w: torch.Tensor, groups: int) -> torch.Tensor:
    """[O, I, kh, kw] (I per group) -> conv_transpose2d's layout [groups * I, O / groups, kh, kw]."""
    o, i, kh, kw = w.shape
    w = w.reshape(groups, o // groups, i, kh, kw).transpose(1, 2)
    return w.reshape(groups * i, o // groups, kh, kw)


def conv_transpose_by_phases(x: torch.Tensor, w: torch.Tensor, up: int, groups: int = 1) -> torch.Tensor:
    """The transposed convolution with stride `up` as up**2 ordinary convolutions, one per output phase.

    x [N, I*groups, H, W], w [O, I, kh, kw] true-convolution taps -> [N, O, (H + qh - 1) * up, ...] with
    qh = ceil(kh / up): F.conv_transpose2d(x, w in its layout, stride=up)'s output, whose
    (H - 1) * up + kh rows are followed by zeros. Output row up*q + p only meets the taps w[p::up], so
    each phase is a small convolution of x itself. On CPU oneDNN's ordinary convolutions ran the 4
    phases of StyleGAN2's 3x3 up-conv (1024 -> 512 channels in 4 groups, 64 px) in 70 ms against 181 ms
    for its transposed convolution.
    """
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    qh, qw = -(-kh // up), -(-kw // up)  # taps of the longest phase
    x = F.pad(x, [qw - 1, qw - 1, qh - 1, qh - 1])
    y = x.new_empty([n, o, h + qh - 1, up, wd + qw - 1, up])  # [N, O, q_y, p_y, q_x, p_x]
    for py in range(up):
        for px in range(up):
            taps = w[:, :, py::up, px::up]  # [O, I, kph, kpw], empty when up > k
            kph, kpw = int(taps.shape[2]), int(taps.shape[3])
            if kph == 0 or kpw == 0:
                y[:, :, :, py, :, px] = 0
                continue
            # Full convolution with kph taps, right-padded to the common length h + qh - 1.
            xp = x[:, :, qh - kph :, qw - kpw :]
            y[:, :, :, py, :, px] = F.conv2d(xp, taps.flip([2, 3]), groups=groups)
    return y.reshape(n, o, (h + qh - 1) * up, (wd + qw - 1) * up)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    groups: int = 1,
    flip_weight: bool = True,
) -> torch.Tensor:
    """Same result as `conv2d_resample_ref`, by the cheapest route for the case at hand."""
    _check(x, w, up, down, groups)
    w = w.to(x.dtype)
    kh, kw = int(w.shape[2]), int(w.shape[3])
    px0, px1, py0, py1 = _resample_padding(f, up, down, padding)

    # 1x1 kernel: resampling commutes with the pointwise conv, so do the conv on the smaller image (a
    # 1x1 kernel is its own flip).
    if kh == 1 and kw == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1])
        return F.conv2d(x, w, groups=groups)
    if kh == 1 and kw == 1 and up > 1 and down == 1:
        x = F.conv2d(x, w, groups=groups)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2)

    # Upsampling: a transposed strided conv is the conv of the zero-stuffed image without the zeros'
    # multiply-adds; it is a true convolution, so it takes the true-convolution kernel (the networks
    # ask for flip_weight=False here, which then costs no flip of the per-sample weights).
    if up > 1:
        w_true = w.flip([2, 3]) if flip_weight else w
        if x.device.type == "cpu":  # see conv_transpose_by_phases; cuDNN's transposed conv is one kernel
            x = conv_transpose_by_phases(x, w_true, up, groups)
            extra_x, extra_y = -(-kw // up) * up - kw, -(-kh // up) * up - kh  # its trailing zeros
        else:
            x = F.conv_transpose2d(x, _transpose_weight(w_true, groups), stride=up, groups=groups)
            extra_x, extra_y = 0, 0
        # [N, O, (H-1)*up + kh, ...]: the transposed conv already spread kh-1 (kw-1) pixels of support.
        pad = [px0 - (kw - 1), px1 - (kw - up) - extra_x, py0 - (kh - 1), py1 - (kh - up) - extra_y]
        x = upfirdn2d(x, f, padding=pad, gain=up**2)
        if down > 1:
            x = upfirdn2d(x, f, down=down)
        return x

    w_corr = w if flip_weight else w.flip([2, 3])  # the kernel as torch's correlating conv2d takes it

    # Downsampling only: filter, then a strided conv skips the pixels that would be thrown away.
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1])
        return F.conv2d(x, w_corr, stride=down, groups=groups)

    # No resampling.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        if winograd.eligible(x, w_corr, groups, (py0, px0)):
            return winograd.conv3x3(x, winograd.cached_transform(w_corr))
        return F.conv2d(x, w_corr, padding=[py0, px0], groups=groups)
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    return F.conv2d(x, w_corr, groups=groups)
