"""3x3 convolution by Winograd's minimal filtering F(m x m, 3 x 3) (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016).

An m x m block of a 3x3 correlation's output needs only (m + 2)^2 multiplications per channel pair
instead of 9 m^2: Y = A^T [(G g G^T) * (B^T d B)] A for an (m + 2) x (m + 2) input tile d and filter g.
Across channels the elementwise product becomes (m + 2)^2 matrix products [tiles, I] x [I, O], so a
convolution turns into batched GEMMs with 9 m^2 / (m + 2)^2 times fewer multiply-adds (4x for m = 4).
The transforms are sums of a few scaled neighbours; they cost memory traffic, not arithmetic, which is
why the tiles are processed in chunks that stay in cache.

The matrices come from the Toom-Cook construction on the points 0, 1, -1, 2, -2, ... and infinity:
A^T and G are Vandermonde rows of those points (G's scaled by 1 / prod(p_j - p_l)), and B^T solves
the identity the algorithm must satisfy; `winograd_matrices` derives them rather than listing them.

Numerics: F(4, 3) rounds a little more than a direct convolution (in float32 we measured max abs error
~5e-5 against float64 on unit-variance 512-channel layers, direct ~2e-5), far inside the 1e-3 image
tolerance. It is used for float32 on the CPU only: there PyTorch's oneDNN convolutions run the direct
algorithm, already at about the FMA peak of one core (measured 81-88 GFLOP/s on a 2-core AMD EPYC with
AVX2), so doing fewer multiplications is what is left. On CUDA the cuDNN routes are kept.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

TILE = 4  # m: output pixels per tile side; F(4x4, 3x3) does 36 multiplications where direct needs 144

# Below this many output pixels per image, or channels on either side, the transforms cost more than
# the multiplications they save (measured on a 2-core AVX2 AMD EPYC: for 512 channels 8 x 8 was slower and
# 16 x 16 faster; 128 channels at 256 x 256 about even).
MIN_PIXELS = 16 * 16
MIN_CHANNELS = 128
# Bytes of transformed tiles per chunk: small enough to stay in cache between the three steps, large
# enough that the GEMMs stay efficient (8-32 MB measured best; 1 GB, i.e. unchunked, was 1.5-2x slower).
CHUNK_BYTES = 16 << 20


@functools.cache
def winograd_matrices(m: int, r: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A^T [m, n], G [n, r], B^T [n, n] of F(m, r), n = m + r - 1, in float64.

    y = A^T ((G g) * (B^T d)) is the correlation y_i = sum_k g_k d_(i+k) of an input d of n samples.
    """
    n = m + r - 1
    points = [0.0] + [s * k for k in range(1, n) for s in (1.0, -1.0)][: n - 2]
    at = np.zeros((m, n))
    g = np.zeros((n, r))
    for j, p in enumerate(points):
        at[:, j] = [p**i for i in range(m)]
        g[j] = [p**k / np.prod([p - q for q in points if q != p]) for k in range(r)]
    at[m - 1, n - 1] = 1.0  # the point at infinity: the highest coefficient alone
    g[n - 1, r - 1] = 1.0
    # B^T from sum_j A^T[i, j] G[j, k] B^T[j, l] = [l == i + k] for all i, k, l: one small linear
    # system per column l, exactly solvable for distinct points.
    system = np.stack([at[i] * g[:, k] for i in range(m) for k in range(r)])  # [(i, k), j]
    bt = np.zeros((n, n))
    for col in range(n):
        rhs = np.array([1.0 if col == i + k else 0.0 for i in range(m) for k in range(r)])
        bt[:, col] = np.linalg.lstsq(system, rhs, rcond=None)[0]
    return at, g, bt


@functools.cache
def _kron_matrices(m: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 2-D transforms as single matrices acting on flattened tiles: kron(A^T, A^T) [m^2, n^2],
    kron(G, G) [n^2, 9], kron(B^T, B^T) [n^2, n^2] (float32)."""
    at, g, bt = (torch.tensor(a, dtype=torch.float32, device=device) for a in winograd_matrices(m))
    return torch.kron(at, at), torch.kron(g, g), torch.kron(bt, bt)


def transform_weight(w: torch.Tensor, m: int = TILE) -> torch.Tensor:
    """G g G^T for every filter: w [O, I, 3, 3] (as F.conv2d takes it) -> U [(m + 2)^2, I, O]."""
    o, i = int(w.shape[0]), int(w.shape[1])
    _, gg, _ = _kron_matrices(m, w.device)
    return (gg @ w.float().permute(2, 3, 1, 0).reshape(9, i * o)).view(-1, i, o)


def up2_phase_weight(w: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The 2x-upsampling layer as four 3x3 correlations at the input resolution, one per output phase.

    The layer (`conv2d_resample` with up=2, padding 1, a true 3x3 convolution `w` [O, I, 3, 3] and a
    4-tap FIR `f`, 1-D or 2-D) is zero insertion, then convolution with K = 4 f * w, a 6x6 kernel.
    Output pixel 2i + p only meets every other tap of K, K[p + 4], K[p + 2], K[p] against input pixels
    i - 1, i, i + 1 (the alignment 'same' padding gives), so each of the four phases (p_y, p_x) is an
    ordinary 3x3 correlation of x with padding 1. -> [4 O, I, 3, 3], phase-major ((p_y, p_x), O).
    """
    o, i = int(w.shape[0]), int(w.shape[1])
    f2 = torch.outer(f, f) if f.ndim == 1 else f
    fir = (4 * f2.to(w.dtype)).flip([0, 1])[None, None]  # gain up^2; flipped: F.conv2d correlates
    k = F.conv2d(F.pad(w.reshape(o * i, 1, 3, 3), [3, 3, 3, 3]), fir).view(o, i, 6, 6)  # K = f * w, full
    taps = [[p + 4, p + 2, p] for p in (0, 1)]
    return torch.cat([k[:, :, taps[py]][:, :, :, taps[px]] for py in (0, 1) for px in (0, 1)])


# The phase weights' transform is 16x the layer's weight (4 phases, 36 / 9 taps each) and is streamed
# once per chunk, so the up route pays only on large inputs: from 64 x 64 on (at 32 x 32, batch 4, 512
# channels it was no faster than the phase convolutions and held 151 MB).
UP2_MIN_INPUT_PIXELS = 64 * 64


def fits_up2(
    x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None, padding: tuple[int, int, int, int]
) -> bool:
    """Whether `up2_phase_weight` describes this up=2 layer (3x3 kernel, 4-tap filter, padding 1) and
    the input is large enough for the route to pay."""
    return (
        x.shape[2] * x.shape[3] >= UP2_MIN_INPUT_PIXELS
        and tuple(w.shape[2:]) == (3, 3)
        and f is not None
        and tuple(f.shape) in ((4,), (4, 4))
        and padding == (1, 1, 1, 1)
    )


# Transformed weights of constant (inference) filters, computed once per filter tensor and use. Keyed by
# id with a weak reference that drops the entry when the filter dies; the version counter and data
# pointer tell an in-place update (load_state_dict, an EMA step) or a swapped `.data` apart.
_Key = tuple[int, str]
_transformed: dict[_Key, tuple[weakref.ref[torch.Tensor], int, int, torch.Tensor]] = {}


def _remembered(w: torch.Tensor, use: str, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    if w.is_inference():  # made under torch.inference_mode: no version counter, and a temporary anyway
        return build()
    key = (id(w), use)
    hit = _transformed.get(key)
    if hit is not None and hit[0]() is w and hit[1:3] == (w._version, w.data_ptr()):
        return hit[3]
    u = build()
    _transformed[key] = (weakref.ref(w, lambda _: _transformed.pop(key, None)), w._version, w.data_ptr(), u)
    return u


def cached_transform(w: torch.Tensor) -> torch.Tensor:
    """`transform_weight(w)`, remembered for as long as `w` lives with the same contents."""
    return _remembered(w, "same", lambda: transform_weight(w))


def cached_up2_transform(w: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """`transform_weight(up2_phase_weight(w, f))`, remembered like `cached_transform` (`f` is a buffer
    that never changes). 16x the weight's size: four phases, 36 / 9 transformed taps each."""
    return _remembered(w, "up2", lambda: transform_weight(up2_phase_weight(w, f)))


def up2_conv3x3(x: torch.Tensor, u: torch.Tensor, in_scale: torch.Tensor | None = None) -> torch.Tensor:
    """The up=2 layer from its phases: x [N, I, H, W], u = cached_up2_transform(w, f) -> [N, O, 2H, 2W]
    (channels-last), the same as conv2d_resample(x * in_scale, w, f, up=2, padding=1, flip_weight=False)."""
    y = conv3x3(x, u, in_scale=in_scale)  # [N, (p_y, p_x, O), H, W]
    n, c4, h, w = (int(s) for s in y.shape)
    o = c4 // 4
    phases = y.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, o)  # [N, H, W, p_y, p_x, O]
    out = phases.permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, o)  # interleave: row 2i + p_y
    return out.permute(0, 3, 1, 2)


def eligible(x: torch.Tensor, w: torch.Tensor, groups: int, padding: tuple[int, int]) -> bool:
    """Whether `conv3x3` should replace F.conv2d(x, w, padding=padding, groups=groups) here: float32
    on the CPU, a 3x3 'same' convolution without groups on a large enough image, and no autograd (the
    cached weight transform would hide the weight from it)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and w.dtype == torch.float32
        and groups == 1
        and tuple(w.shape[2:]) == (3, 3)
        and padding == (1, 1)
        and x.ndim == 4
        and x.shape[2] * x.shape[3] >= MIN_PIXELS
        and min(w.shape[0], w.shape[1]) >= MIN_CHANNELS
        and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
    )


def conv3x3(
    x: torch.Tensor, u: torch.Tensor, m: int = TILE, in_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """F.conv2d(x * in_scale[:, :, None, None], w, padding=1) for u = transform_weight(w, m):
    x [N, I, H, W], in_scale [N, I] or None -> [N, O, H, W].

    The input scale (a modulated conv's styles) is applied while x is copied into the padded,
    channels-innermost buffer that the tiles are read from, so it costs no pass of its own. The result
    is channels-last in memory (the GEMMs produce output channels innermost).
    """
    n, c, h, wd = (int(s) for s in x.shape)
    a = m + 2
    o = int(u.shape[2])
    if u.shape != (a * a, c, o):
        raise ValueError(f"transformed weight {list(u.shape)} does not fit x {list(x.shape)} and F({m}, 3)")
    aa, _, bb = _kron_matrices(m, x.device)
    th, tw = -(-h // m), -(-wd // m)  # tiles per column and row; the last ones may overhang
    # Zero border of 1 ('same' padding) plus the overhang, channels innermost so that gathering a tile
    # reads whole channel vectors; only the border is zeroed, the inside is written once.
    xp = x.new_empty([n, th * m + 2, tw * m + 2, c])  # [N, Hp, Wp, I]
    for border in (xp[:, :1], xp[:, h + 1 :], xp[:, :, :1], xp[:, :, wd + 1 :]):
        border.zero_()
    inside, src = xp[:, 1 : h + 1, 1 : wd + 1], x.permute(0, 2, 3, 1)
    if in_scale is None:
        inside.copy_(src)
    else:
        if in_scale.shape != (n, c):
            raise ValueError(f"in_scale {list(in_scale.shape)} does not fit x {list(x.shape)}")
        torch.mul(src, in_scale.to(x.dtype).reshape(n, 1, 1, c), out=inside)
    out = x.new_empty([n, th, m, tw, m, o])
    # Every chunk streams all of u through the GEMMs, so a chunk is never smaller than u itself.
    budget = max(CHUNK_BYTES, u.numel() * u.element_size())
    rows = max(1, min(th, budget // (a * a * n * tw * max(c, o) * 4)))
    for r0 in range(0, th, rows):
        r1 = min(th, r0 + rows)
        tiles = xp[:, r0 * m : r1 * m + 2].unfold(1, a, m).unfold(2, a, m)  # [N, rows, tw, I, a, a]
        d = tiles.permute(4, 5, 0, 1, 2, 3).reshape(a * a, -1)  # [(a, a), N * rows * tw * I]
        v = (bb @ d).view(a * a, -1, c)  # B^T d B per tile and channel: [a^2, tiles, I]
        prod = torch.bmm(v, u)  # [a^2, tiles, O]: the elementwise products, summed over channels
        y = (aa @ prod.view(a * a, -1)).view(m, m, n, r1 - r0, tw, o)  # A^T (.) A
        out[:, r0:r1].copy_(y.permute(2, 3, 0, 4, 1, 5))
    return out.view(n, th * m, tw * m, o)[:, :h, :wd].permute(0, 3, 1, 2)
