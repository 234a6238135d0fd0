"""Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial Networks
with Limited Data", ADA).

Every image D sees, real or fake, goes through the same random pipeline (section 2): each transform is
applied with probability `multiplier * p`, so at p < ~0.8 the augmentations do not leak into G. The
18 transforms are those of appendix B with the official strengths (stylegan2-ada-pytorch
`training/augment.py`): pixel blitting (x-flip, 90-degree rotations, integer translation), general
geometry (isotropic scaling, pre-rotation, anisotropic scaling, post-rotation, fractional translation),
colour (brightness, contrast, luma flip, hue, saturation), image-space filtering and corruptions
(additive RGB noise, cutout). p itself is tuned by `AdaController` from the sign of D(real) (section 3).

Geometric transforms are composed into one inverse matrix per image and executed once, as officially:
reflection padding, 2x upsampling with the 12-tap symlet-6 low-pass filter, bilinear `grid_sample`,
2x downsampling with the same filter. Everything is differentiable with respect to the images, which is
what lets G learn through the augmentation of its fakes.

One difference from the official pipe: an image whose drawn parameters are all the identity is passed
through untouched instead of through the resampling filters, so p = 0 is exactly the identity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gan.errors import ConfigError

# Low-pass filters of the Daubechies symlets (the wavelet's scaling coefficients), as in the official
# pipe: sym2 builds the filter bank of image-space filtering, sym6 resamples the geometric transforms.
SYM2 = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)
SYM6 = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)  # fmt: skip

_BLIT = {"xflip": 1, "rotate90": 1, "xint": 1}
_GEOM = {"scale": 1, "rotate": 1, "aniso": 1, "xfrac": 1}
_COLOR = {"brightness": 1, "contrast": 1, "lumaflip": 1, "hue": 1, "saturation": 1}

# The official `--augpipe` specs (stylegan2-ada-pytorch train.py); `bgc` is the default.
AUGMENT_PRESETS: MappingProxyType[str, MappingProxyType[str, float]] = MappingProxyType(
    {
        name: MappingProxyType(spec)
        for name, spec in {
            "blit": _BLIT,
            "geom": _GEOM,
            "color": _COLOR,
            "filter": {"imgfilter": 1},
            "noise": {"noise": 1},
            "cutout": {"cutout": 1},
            "bg": {**_BLIT, **_GEOM},
            "bgc": {**_BLIT, **_GEOM, **_COLOR},
            "bgcf": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1},
            "bgcfn": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1},
            "bgcfnc": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1, "cutout": 1},
        }.items()
    }
)
DEFAULT_PRESET = "bgc"
TRANSFORM_NAMES = (
    "xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
    "brightness", "contrast", "lumaflip", "hue", "saturation", "imgfilter", "noise", "cutout",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Batched homogeneous matrices: each argument is a [N] tensor (or a number), the result [N, K, K].


def _matrix(rows: list[list[Any]], n: int, device: torch.device) -> torch.Tensor:
    out = torch.empty(n, len(rows), len(rows[0]), device=device)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            out[:, i, j] = v
    return out


def translate2d(tx: Any, ty: Any, n: int, device: torch.device) -> torch.Tensor:
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], n, device)


def scale2d(sx: Any, sy: Any, n: int, device: torch.device) -> torch.Tensor:
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], n, device)


def rotate2d(theta: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], n, device)


def translate3d(t: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    return _matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], n, device)


def scale3d(s: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    return _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], n, device)


def rotate3d(v: torch.Tensor, theta: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """Rotation by theta around the unit axis v (Rodrigues' formula)."""
    vx, vy, vz = (float(x) for x in v[:3])
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    return _matrix(
        [
            [vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
            [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
            [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
            [0, 0, 0, 1],
        ],
        n,
        device,
    )


# ---------------------------------------------------------------------------------------------------
# Plain separable FIR resampling (the upfirdn2d semantics: zero-insert, pad, convolve, decimate).


def _fir_1d(
    x: torch.Tensor, f: torch.Tensor, dim: int, up: int, down: int, pad: tuple[int, int], flip: bool
) -> torch.Tensor:
    """Resample `x` [N, C, H, W] along `dim` (2 = H, 3 = W) by up/down with the 1-D filter `f`."""
    n, c, h, w = x.shape
    if up > 1:  # insert up-1 zeros after every sample
        shape = [n, c, h, w]
        shape[dim] *= up
        z = x.new_zeros(shape)
        index = [slice(None)] * 4
        index[dim] = slice(None, None, up)
        z[tuple(index)] = x
        x = z
    p0, p1 = pad
    if dim == 3:
        x = F.pad(x, [max(p0, 0), max(p1, 0), 0, 0])
        x = x[:, :, :, max(-p0, 0) : x.shape[3] - max(-p1, 0)]
        weight = f.flip(0) if not flip else f
        weight = weight.to(x.dtype).reshape(1, 1, 1, -1).repeat(c, 1, 1, 1)
    else:
        x = F.pad(x, [0, 0, max(p0, 0), max(p1, 0)])
        x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), :]
        weight = f.flip(0) if not flip else f
        weight = weight.to(x.dtype).reshape(1, 1, -1, 1).repeat(c, 1, 1, 1)
    x = F.conv2d(x, weight, groups=c)  # correlation; the flip above makes it a convolution
    if down > 1:
        index = [slice(None)] * 4
        index[dim] = slice(None, None, down)
        x = x[tuple(index)]
    return x


def upsample2x(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x upsampling with the normalised filter f; gain 2 per axis keeps the mean."""
    fw = f.numel()
    pad = ((fw + 1) // 2, (fw - 2) // 2)
    x = _fir_1d(x, f * 2, dim=3, up=2, down=1, pad=pad, flip=False)
    return _fir_1d(x, f * 2, dim=2, up=2, down=1, pad=pad, flip=False)


def downsample2x(x: torch.Tensor, f: torch.Tensor, crop: int) -> torch.Tensor:
    """2x downsampling with f (flipped, as officially), cropping `crop` input pixels per side."""
    fw = f.numel()
    pad = (-crop + (fw - 1) // 2, -crop + (fw - 2) // 2)
    x = _fir_1d(x, f, dim=3, up=1, down=2, pad=pad, flip=True)
    return _fir_1d(x, f, dim=2, up=1, down=2, pad=pad, flip=True)


def _filter_bank() -> np.ndarray:
    """Four band-pass filters splitting the spectrum into octaves, from the sym2 quadrature pair.

    Row 0 is the lowest band; row i (i >= 1) is the i-th octave from the top. Built like a wavelet
    decomposition: at each level every existing filter is dilated 2x and low-passed, and the new band
    gets the high-pass H(-z)H(-1/z)/2. The four rows sum to a unit impulse, so unit gains are identity.
    """
    lo = np.asarray(SYM2)
    hi = lo * (-1.0) ** np.arange(lo.size)
    lo2 = np.convolve(lo, lo[::-1]) / 2  # H(z) H(1/z) / 2
    hi2 = np.convolve(hi, hi[::-1]) / 2
    bank = np.zeros((4, 1))
    bank[0, 0] = 1
    for i in range(1, 4):
        dilated = np.zeros((4, bank.shape[1] * 2 - 1))
        dilated[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo2) for row in dilated])
        start = (bank.shape[1] - hi2.size) // 2
        bank[i, start : start + hi2.size] += hi2
    return bank


# ---------------------------------------------------------------------------------------------------


class AugmentPipe(torch.nn.Module):
    """The ADA pipeline; every transform is off (multiplier 0) unless enabled, e.g. by a preset.

    Strength defaults are the official ones: `*_std` are standard deviations (log2 for scales),
    `*_max` are ranges (1 = full circle), translations are relative to the image size.
    """

    p: torch.Tensor
    Hz_geom: torch.Tensor
    Hz_fbank: torch.Tensor

    def __init__(
        self,
        xflip: float = 0, rotate90: float = 0, xint: float = 0, xint_max: float = 0.125,
        scale: float = 0, rotate: float = 0, aniso: float = 0, xfrac: float = 0,
        scale_std: float = 0.2, rotate_max: float = 1, aniso_std: float = 0.2, xfrac_std: float = 0.125,
        brightness: float = 0, contrast: float = 0, lumaflip: float = 0, hue: float = 0, saturation: float = 0,
        brightness_std: float = 0.2, contrast_std: float = 0.5, hue_max: float = 1, saturation_std: float = 1,
        imgfilter: float = 0, imgfilter_bands: tuple[float, float, float, float] = (1, 1, 1, 1),
        imgfilter_std: float = 1,
        noise: float = 0, cutout: float = 0, noise_std: float = 0.1, cutout_size: float = 0.5,
        p: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        if not 0 <= p <= 1:
            raise ConfigError(f"augment probability p must be in [0, 1], got {p}")
        # The overall probability multiplier: fixed (--aug fixed --p P) or tuned by AdaController.
        self.register_buffer("p", torch.tensor(float(p)))
        self.xflip, self.rotate90, self.xint, self.xint_max = (
            float(xflip),
            float(rotate90),
            float(xint),
            float(xint_max),
        )
        self.scale, self.rotate, self.aniso, self.xfrac = (
            float(scale),
            float(rotate),
            float(aniso),
            float(xfrac),
        )
        self.scale_std, self.rotate_max = float(scale_std), float(rotate_max)
        self.aniso_std, self.xfrac_std = float(aniso_std), float(xfrac_std)
        self.brightness, self.contrast, self.lumaflip = float(brightness), float(contrast), float(lumaflip)
        self.hue, self.saturation = float(hue), float(saturation)
        self.brightness_std, self.contrast_std = float(brightness_std), float(contrast_std)
        self.hue_max, self.saturation_std = float(hue_max), float(saturation_std)
        self.imgfilter, self.imgfilter_std = float(imgfilter), float(imgfilter_std)
        self.imgfilter_bands = tuple(float(b) for b in imgfilter_bands)
        self.noise, self.cutout = float(noise), float(cutout)
        self.noise_std, self.cutout_size = float(noise_std), float(cutout_size)
        if len(self.imgfilter_bands) != 4:
            raise ConfigError(f"imgfilter_bands needs 4 values, got {len(self.imgfilter_bands)}")
        for name in TRANSFORM_NAMES:
            if getattr(self, name) < 0:
                raise ConfigError(f"augment multiplier {name} must be >= 0, got {getattr(self, name)}")
        sym6 = torch.tensor(SYM6, dtype=torch.float64)
        self.register_buffer("Hz_geom", (sym6 / sym6.sum()).float(), persistent=False)
        self.register_buffer(
            "Hz_fbank", torch.as_tensor(_filter_bank(), dtype=torch.float32), persistent=False
        )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> AugmentPipe:
        if name not in AUGMENT_PRESETS:
            raise ConfigError(f"augment preset must be one of {', '.join(AUGMENT_PRESETS)}, got {name!r}")
        return cls(**{**AUGMENT_PRESETS[name], **overrides})

    def _chance(self, multiplier: float, shape: list[int], device: torch.device) -> torch.Tensor:
        return torch.rand(shape, device=device) < multiplier * self.p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ConfigError(f"AugmentPipe expects [N, C, H, W] images, got shape {list(images.shape)}")
        n, c, h, w = images.shape  # [N, C, H, W], about [-1, 1]
        dev = images.device
        images = self._geometric(images, n, h, w, dev)
        images = self._color(images, n, c, h, w, dev)
        images = self._filter(images, n, c, h, w, dev)
        return self._corrupt(images, n, c, h, w, dev)

    # -- geometry: one inverse matrix G_inv per image, output pixel -> input pixel -----------------

    def _geometric(self, images: torch.Tensor, n: int, h: int, w: int, dev: torch.device) -> torch.Tensor:
        eye = torch.eye(3, device=dev).expand(n, 3, 3)
        G_inv = eye
        zeros, ones = torch.zeros(n, device=dev), torch.ones(n, device=dev)

        if self.xflip > 0:
            i = torch.floor(torch.rand(n, device=dev) * 2)
            i = torch.where(self._chance(self.xflip, [n], dev), i, zeros)
            G_inv = G_inv @ scale2d(1 - 2 * i, 1, n, dev)
        if self.rotate90 > 0:
            i = torch.floor(torch.rand(n, device=dev) * 4)
            i = torch.where(self._chance(self.rotate90, [n], dev), i, zeros)
            G_inv = G_inv @ rotate2d(math.pi / 2 * i, n, dev)  # inverse of a rotation by -90 i degrees
        if self.xint > 0:
            t = (torch.rand(n, 2, device=dev) * 2 - 1) * self.xint_max
            t = torch.where(self._chance(self.xint, [n, 1], dev), t, torch.zeros_like(t))
            G_inv = G_inv @ translate2d(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h), n, dev)

        if self.scale > 0:
            s = torch.exp2(torch.randn(n, device=dev) * self.scale_std)
            s = torch.where(self._chance(self.scale, [n], dev), s, ones)
            G_inv = G_inv @ scale2d(1 / s, 1 / s, n, dev)
        # Pre- and post-rotation each with p_rot, so that P(any rotation) = rotate * p.
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p).clamp(0, 1))
        if self.rotate > 0:
            theta = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.rotate_max
            theta = torch.where(torch.rand(n, device=dev) < p_rot, theta, zeros)
            G_inv = G_inv @ rotate2d(theta, n, dev)  # before anisotropic scaling
        if self.aniso > 0:
            s = torch.exp2(torch.randn(n, device=dev) * self.aniso_std)
            s = torch.where(self._chance(self.aniso, [n], dev), s, ones)
            G_inv = G_inv @ scale2d(1 / s, s, n, dev)
        if self.rotate > 0:
            theta = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.rotate_max
            theta = torch.where(torch.rand(n, device=dev) < p_rot, theta, zeros)
            G_inv = G_inv @ rotate2d(theta, n, dev)  # after anisotropic scaling
        if self.xfrac > 0:
            t = torch.randn(n, 2, device=dev) * self.xfrac_std
            t = torch.where(self._chance(self.xfrac, [n, 1], dev), t, torch.zeros_like(t))
            G_inv = G_inv @ translate2d(-t[:, 0] * w, -t[:, 1] * h, n, dev)

        if G_inv is eye:
            return images
        moved = (G_inv != eye).flatten(1).any(dim=1)
        if not bool(moved.any()):
            return images
        idx = moved.nonzero()[:, 0]
        out = self._resample(images[idx], G_inv[idx], h, w)
        return images.index_copy(0, idx, out)

    def _resample(self, images: torch.Tensor, G_inv: torch.Tensor, h: int, w: int) -> torch.Tensor:
        n, c = images.shape[:2]
        dev = images.device
        f = self.Hz_geom
        f_pad = f.numel() // 4  # 3 for the 12-tap sym6

        # Pad by reflection enough to cover where the corners land, plus the filter's reach.
        cx, cy = (w - 1) / 2, (h - 1) / 2
        corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], device=dev)
        cp = G_inv @ corners.t()  # [n, 3, 4]
        reach = cp[:, :2, :].permute(1, 0, 2).flatten(1)  # [xy, n * 4]
        margin = torch.cat([-reach, reach]).max(dim=1).values  # [x0, y0, x1, y1]
        margin = margin + torch.tensor([f_pad * 2 - cx, f_pad * 2 - cy] * 2, device=dev)
        margin = margin.clamp(min=0)
        margin = torch.minimum(margin, torch.tensor([w - 1, h - 1] * 2, device=dev, dtype=margin.dtype))
        mx0, my0, mx1, my1 = (int(v) for v in margin.ceil().tolist())

        images = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
        G_inv = translate2d((mx0 - mx1) / 2, (my0 - my1) / 2, n, dev) @ G_inv

        images = upsample2x(images, f)
        G_inv = scale2d(2, 2, n, dev) @ G_inv @ scale2d(0.5, 0.5, n, dev)
        G_inv = translate2d(-0.5, -0.5, n, dev) @ G_inv @ translate2d(0.5, 0.5, n, dev)

        # affine_grid works in [-1, 1] coordinates of the output and input tensors.
        shape = [n, c, (h + f_pad * 2) * 2, (w + f_pad * 2) * 2]
        to_in = scale2d(2 / images.shape[3], 2 / images.shape[2], n, dev)
        from_out = scale2d(shape[3] / 2, shape[2] / 2, n, dev)
        G_inv = to_in @ G_inv @ from_out
        grid = F.affine_grid(G_inv[:, :2, :], shape, align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

        return downsample2x(images, f, crop=f_pad * 2)

    # -- colour: one 4x4 homogeneous matrix C per image, colour_out = C colour_in ------------------

    def _color(self, images: torch.Tensor, n: int, c: int, h: int, w: int, dev: torch.device) -> torch.Tensor:
        eye = torch.eye(4, device=dev).expand(n, 4, 4)
        C = eye
        v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev) / math.sqrt(3)  # the luma axis
        vv = torch.outer(v, v)
        zeros, ones = torch.zeros(n, device=dev), torch.ones(n, device=dev)
        if self.brightness > 0:
            b = torch.randn(n, device=dev) * self.brightness_std
            b = torch.where(self._chance(self.brightness, [n], dev), b, zeros)
            C = translate3d(b, n, dev) @ C
        if self.contrast > 0:
            s = torch.exp2(torch.randn(n, device=dev) * self.contrast_std)
            s = torch.where(self._chance(self.contrast, [n], dev), s, ones)
            C = scale3d(s, n, dev) @ C
        if self.lumaflip > 0:
            i = torch.floor(torch.rand(n, 1, 1, device=dev) * 2)
            i = torch.where(self._chance(self.lumaflip, [n, 1, 1], dev), i, torch.zeros_like(i))
            C = (torch.eye(4, device=dev) - 2 * vv * i) @ C  # Householder reflection through the grey plane
        if self.hue > 0 and c > 1:
            theta = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.hue_max
            theta = torch.where(self._chance(self.hue, [n], dev), theta, zeros)
            C = rotate3d(v, theta, n, dev) @ C
        if self.saturation > 0 and c > 1:
            s = torch.exp2(torch.randn(n, 1, 1, device=dev) * self.saturation_std)
            s = torch.where(self._chance(self.saturation, [n, 1, 1], dev), s, torch.ones_like(s))
            C = (vv + (torch.eye(4, device=dev) - vv) * s) @ C
        if C is eye:
            return images
        if torch.equal(C, eye):
            return images
        flat = images.reshape(n, c, h * w)
        if c == 3:
            flat = C[:, :3, :3] @ flat + C[:, :3, 3:]
        elif c == 1:
            C1 = C[:, :3, :].mean(dim=1, keepdim=True)  # grey: average the RGB rows
            flat = flat * C1[:, :, :3].sum(dim=2, keepdim=True) + C1[:, :, 3:]
        else:
            raise ConfigError(f"colour augmentation needs 1 or 3 channels, got {c}")
        return flat.reshape(n, c, h, w)

    # -- image-space filtering: random gains per frequency band, power-normalised -------------------

    def _filter(
        self, images: torch.Tensor, n: int, c: int, h: int, w: int, dev: torch.device
    ) -> torch.Tensor:
        if self.imgfilter <= 0:
            return images
        bands = self.Hz_fbank.shape[0]
        pad = self.Hz_fbank.shape[1] // 2
        if min(h, w) <= pad:
            raise ConfigError(
                f"image-space filtering reflects {pad} px at each side: images must exceed {pad} px, got {h}x{w}"
            )
        expected_power = torch.tensor([10.0, 1.0, 1.0, 1.0], device=dev) / 13  # a 1/f spectrum
        g = torch.ones(n, bands, device=dev)
        applied = torch.zeros(n, dtype=torch.bool, device=dev)
        for i, band_strength in enumerate(self.imgfilter_bands):
            t_i = torch.exp2(torch.randn(n, device=dev) * self.imgfilter_std)
            chosen = self._chance(self.imgfilter * band_strength, [n], dev)
            applied |= chosen
            t_i = torch.where(chosen, t_i, torch.ones_like(t_i))
            t = torch.ones(n, bands, device=dev)
            t[:, i] = t_i
            t = t / (expected_power * t.square()).sum(dim=-1, keepdim=True).sqrt()  # keep expected power
            g = g * t
        if not bool(applied.any()):
            return images
        idx = applied.nonzero()[:, 0]
        k = idx.numel()
        taps = (g[idx] @ self.Hz_fbank).repeat_interleave(c, dim=0)  # [k * C, taps]
        x = images[idx].reshape(1, k * c, h, w)
        x = F.pad(x, [pad, pad, pad, pad], mode="reflect")
        x = F.conv2d(x, taps[:, None, None, :], groups=k * c)
        x = F.conv2d(x, taps[:, None, :, None], groups=k * c)
        return images.index_copy(0, idx, x.reshape(k, c, h, w))

    # -- corruptions --------------------------------------------------------------------------------

    def _corrupt(
        self, images: torch.Tensor, n: int, c: int, h: int, w: int, dev: torch.device
    ) -> torch.Tensor:
        if self.noise > 0:
            sigma = torch.randn(n, 1, 1, 1, device=dev).abs() * self.noise_std
            sigma = torch.where(self._chance(self.noise, [n, 1, 1, 1], dev), sigma, torch.zeros_like(sigma))
            if bool((sigma != 0).any()):
                images = images + torch.randn(n, c, h, w, device=dev) * sigma
        if self.cutout > 0:
            size = torch.full([n, 2, 1, 1, 1], self.cutout_size, device=dev)
            size = torch.where(self._chance(self.cutout, [n, 1, 1, 1, 1], dev), size, torch.zeros_like(size))
            center = torch.rand(n, 2, 1, 1, 1, device=dev)
            if bool((size != 0).any()):
                x = torch.arange(w, device=dev).reshape(1, 1, 1, -1)
                y = torch.arange(h, device=dev).reshape(1, 1, -1, 1)
                keep_x = ((x + 0.5) / w - center[:, 0]).abs() >= size[:, 0] / 2
                keep_y = ((y + 0.5) / h - center[:, 1]).abs() >= size[:, 1] / 2
                images = images * torch.logical_or(keep_x, keep_y).to(images.dtype)
        return images


# ---------------------------------------------------------------------------------------------------


class AdaController:
    """Tunes `pipe.p` from the overfitting heuristic r_t = E[sign(D(x_real))] (ADA section 3).

    Every `interval` batches, p moves by sign(r_t - target) * (batch * interval) / (kimg * 1000): fast
    enough to go from 0 to 1 in `kimg` thousand images, slow enough not to oscillate. p stays in [0, 1].
    Call `observe(real_logits)` with D's outputs on (augmented) reals, then `step(batch_size)` once per
    batch. Under DDP, pass `all_reduce` (an in-place sum over ranks) so every rank moves p alike.
    """

    def __init__(self, pipe: AugmentPipe, target: float = 0.6, interval: int = 4, kimg: float = 500) -> None:
        if not 0 <= target <= 1:
            raise ConfigError(f"ADA target must be in [0, 1], got {target}")
        if interval < 1 or kimg <= 0:
            raise ConfigError(f"ADA interval must be >= 1 and kimg > 0, got {interval} and {kimg}")
        self.pipe = pipe
        self.target = float(target)
        self.interval = int(interval)
        self.kimg = float(kimg)
        self.batches = 0
        self.sign_sum = torch.zeros([], dtype=torch.float64)
        self.count = torch.zeros([], dtype=torch.float64)
        self.rt: float | None = None  # the last measured heuristic, for progress reports

    def observe(self, real_logits: torch.Tensor) -> None:
        logits = real_logits.detach().flatten().to(torch.float64).cpu()
        self.sign_sum += logits.sign().sum()
        self.count += logits.numel()

    def step(self, batch_size: int, all_reduce: Callable[[torch.Tensor], None] | None = None) -> bool:
        """Count one batch; every `interval` batches adjust p. Returns True when p was adjusted."""
        self.batches += 1
        if self.batches % self.interval != 0:
            return False
        stats = torch.stack([self.sign_sum, self.count])
        if all_reduce is not None:
            all_reduce(stats)
        self.sign_sum.zero_()
        self.count.zero_()
        if float(stats[1]) == 0:
            return False
        self.rt = float(stats[0] / stats[1])
        adjust = np.sign(self.rt - self.target) * (batch_size * self.interval) / (self.kimg * 1000)
        with torch.no_grad():
            self.pipe.p.copy_((self.pipe.p + adjust).clamp(0, 1))
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "sign_sum": float(self.sign_sum),
            "count": float(self.count),
            "rt": self.rt,
            "p": float(self.pipe.p),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches = int(state["batches"])
        self.sign_sum.fill_(float(state["sign_sum"]))
        self.count.fill_(float(state["count"]))
        self.rt = state["rt"]
        with torch.no_grad():
            self.pipe.p.fill_(float(state["p"]))
