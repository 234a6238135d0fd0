"""The Fourier-feature input of StyleGAN3 (paper Section 3.1 "Fourier features", Appendix F).

Instead of StyleGAN2's learned 4x4 constant, the first layer samples `channels` sinusoids of random
frequency (uniform in a disc of radius `bandwidth` = the first cutoff f_c0) on a continuous grid. A
w-dependent rotation and translation of that grid, followed by an optional user transform, is what lets
the generator translate and rotate its image without aliasing.

Parameter paths are the official ones (`synthesis.input.{weight,affine.*,transform,freqs,phases}`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from gan.errors import ConfigError
from gan.nn.equalized import FullyConnected


def make_transform(translate: tuple[float, float] = (0.0, 0.0), rotate_deg: float = 0.0) -> torch.Tensor:
    """The [3, 3] matrix to store in `input.transform` for an image translated and rotated as asked.

    The buffer holds the inverse of the image-space transform, because it acts on the sampling grid:
    moving the grid by -t moves the content by +t. Same matrix as the official `gen_images.py`
    (`np.linalg.inv(make_transform(translate, angle))`), computed in float64, returned as float32.
    """
    angle = math.radians(rotate_deg)
    s, c = math.sin(angle), math.cos(angle)
    image_transform = np.array(
        [[c, s, translate[0]], [-s, c, translate[1]], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )
    return torch.from_numpy(np.linalg.inv(image_transform)).to(torch.float32)


def _random_disc_frequencies(channels: int, bandwidth: float) -> torch.Tensor:
    """[channels, 2] frequencies spread over the disc of radius `bandwidth`, as the official init draws them.

    Each row is a Gaussian direction scaled to radius exp(-r^2 / 4) <= 1 (r its Gaussian radius), then by
    the bandwidth. Only fresh networks use this; an imported network brings its own `freqs` buffer.
    """
    freqs = torch.randn([channels, 2])
    radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
    freqs = freqs / (radii * radii.square().exp().pow(0.25))
    return freqs * bandwidth


class FourierInput(nn.Module):
    """w [N, w_dim] -> Fourier features [N, channels, size, size] (the official `SynthesisInput`)."""

    transform: torch.Tensor  # [3, 3]
    freqs: torch.Tensor  # [C, 2]
    phases: torch.Tensor  # [C]

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float) -> None:
        super().__init__()
        if not 0 < bandwidth < sampling_rate / 2:
            raise ConfigError(
                f"input bandwidth must lie in (0, sampling_rate/2) = (0, {sampling_rate / 2:g}), got {bandwidth:g}"
            )
        self.w_dim = w_dim
        self.channels = channels
        self.size = size
        self.sampling_rate = sampling_rate
        self.bandwidth = bandwidth

        self.weight = nn.Parameter(torch.randn([channels, channels]))
        # The affine starts at the identity pose: (r_c, r_s, t_x, t_y) = (1, 0, 0, 0) for every w.
        self.affine = FullyConnected(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))  # user inverse transform of the image
        self.register_buffer("freqs", _random_disc_frequencies(channels, bandwidth))
        self.register_buffer("phases", torch.rand([channels]) - 0.5)

    # Appendix F: the affine output t = (r_c, r_s, t_x, t_y), normalised by |(r_c, r_s)|, is an inverse
    # rotation then translation of the image, applied before the user's transform.
    def _grid_transforms(self, w: torch.Tensor, transform: torch.Tensor | None) -> torch.Tensor:
        n = w.shape[0]
        user = self.transform if transform is None else transform.to(device=w.device, dtype=torch.float32)
        if user.shape not in ((3, 3), (n, 3, 3)):
            raise ConfigError(f"transform must have shape [3, 3] or [{n}, 3, 3], got {list(user.shape)}")
        user = user.expand(n, 3, 3)  # [N, 3, 3]

        t = self.affine(w)  # [N, 4]
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        r_c, r_s, t_x, t_y = t.unbind(dim=1)
        one, zero = torch.ones_like(r_c), torch.zeros_like(r_c)
        rotation = torch.stack(
            [
                torch.stack([r_c, -r_s, zero], 1),
                torch.stack([r_s, r_c, zero], 1),
                torch.stack([zero, zero, one], 1),
            ],
            dim=1,
        )  # [N, 3, 3]
        translation = torch.stack(
            [
                torch.stack([one, zero, -t_x], 1),
                torch.stack([zero, one, -t_y], 1),
                torch.stack([zero, zero, one], 1),
            ],
            dim=1,
        )  # [N, 3, 3]
        return rotation @ translation @ user  # [N, 3, 3]

    def forward(self, w: torch.Tensor, transform: torch.Tensor | None = None) -> torch.Tensor:
        """`transform` (None, [3, 3] or [N, 3, 3]) replaces the stored `transform` buffer for this call."""
        assert w.ndim == 2 and w.shape[1] == self.w_dim, f"w must be [N, {self.w_dim}], got {list(w.shape)}"
        transforms = self._grid_transforms(w, transform)  # [N, 3, 3]

        # Transforming the grid x -> A x + b turns sin(2 pi (f.x + p)) into frequencies f A, phases p + f.b.
        freqs = self.freqs.unsqueeze(0) @ transforms[:, :2, :2]  # [N, C, 2]
        shifts = self.freqs.unsqueeze(0) @ transforms[:, :2, 2:]  # [N, C, 1]
        phases = self.phases.unsqueeze(0) + shifts.squeeze(2)  # [N, C]

        # A user rotation or scale can push frequencies past the band the first layer was designed for;
        # fade them linearly to zero between the bandwidth and the Nyquist rate instead of aliasing.
        amplitudes = (
            1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)
        ).clamp(0, 1)  # [N, C]

        grid = self._sampling_grid(w.device)  # [H, W, 2]
        x: torch.Tensor = grid.unsqueeze(0) @ freqs.permute(0, 2, 1).unsqueeze(1)  # [N, H, W, C]
        x = x + phases.unsqueeze(1).unsqueeze(2)
        x = torch.sin(x * (2 * np.pi)) * amplitudes.unsqueeze(1).unsqueeze(2)

        # The learned channel mixing, with the equalized-rate gain 1/sqrt(C).
        mixing: torch.Tensor = self.weight / math.sqrt(self.channels)  # [C, C]
        x = x @ mixing.t()  # [N, H, W, C]
        return x.permute(0, 3, 1, 2)  # [N, C, H, W]

    def _sampling_grid(self, device: torch.device) -> torch.Tensor:
        """[size, size, 2] (x, y) pixel centres in image units (the final image spans one unit, margins
        extend past it), placed as `affine_grid(align_corners=False)` places them."""
        theta = torch.zeros(1, 2, 3, device=device)
        theta[0, 0, 0] = 0.5 * self.size / self.sampling_rate
        theta[0, 1, 1] = 0.5 * self.size / self.sampling_rate
        grid: torch.Tensor = nn.functional.affine_grid(
            theta, [1, 1, self.size, self.size], align_corners=False
        )
        return grid[0]

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, channels={self.channels}, size={self.size}, "
            f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}"
        )
