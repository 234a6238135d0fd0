"""Seeds to images with the official scripts' semantics, as a library the service and the commands share.

The official `gen_images.py` / `generate.py` draw z = `np.random.RandomState(seed).randn(1, z_dim)` in
float64 and hand it to the mapping network, whose first step casts it to float32; we cast before the
forward pass, which is the same rounding. Images are `(x * 127.5 + 128).clamp(0, 255)` truncated to uint8,
exactly as those scripts write their PNGs (the +128 rather than +127.5 makes the truncation round to
nearest for x in [-1, 1]).

`Sampler` loads nothing itself: give it a generator (from `gan.io.checkpoint`) once and sample many
times. Nothing here writes files.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from gan.config import GeneratorConfig
from gan.errors import ConfigError, GanError
from gan.stylegan3.fourier_input import make_transform
from gan.vocabulary import NoiseMode, check_noise_mode, check_seed

if TYPE_CHECKING:
    from gan.generator import Generator

_RANGE = re.compile(r"^(\d+)-(\d+)$")
_NUMBER = re.compile(r"^\d+$")


def parse_int_list(text: str, what: str = "seeds") -> list[int]:
    """'0-3,42' -> [0, 1, 2, 3, 42], the official scripts' `parse_range` syntax, order and repeats kept.

    Unlike the official parser, a reversed range ('5-3'), a blank part or a sign is an error rather than
    an empty or surprising list.
    """
    values: list[int] = []
    parts = text.split(",")
    for part in parts:
        part = part.strip()
        if (m := _RANGE.match(part)) is not None:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise GanError(f"invalid {what} range {part!r}: end is below start")
            values.extend(range(lo, hi + 1))
        elif _NUMBER.match(part):
            values.append(int(part))
        else:
            raise GanError(f"invalid {what} {text!r}: expected numbers or ranges like '0-3,42'")
    return values


def parse_seeds(text: str) -> list[int]:
    """Seeds as the official `--seeds` takes them, each checked to be a valid RandomState seed."""
    seeds = parse_int_list(text, "seeds")
    for seed in seeds:
        _check_seed(seed)
    return seeds


def _check_seed(seed: int) -> None:
    check_seed(seed)


def seed_to_z(seed: int, z_dim: int) -> np.ndarray:
    """z for one seed: [1, z_dim] float64, bit for bit what the official scripts draw."""
    _check_seed(seed)
    return np.random.RandomState(seed).randn(1, z_dim)


def class_to_c(class_idx: int | None, c_dim: int) -> np.ndarray:
    """One-hot label [1, c_dim] float32; an unconditional model has c_dim == 0 and takes no class.

    The official scripts warn and ignore `--class` on an unconditional model; we refuse it, because a
    caller asking for a class on a model that has none has made a mistake worth knowing about.
    """
    c = np.zeros([1, c_dim], dtype=np.float32)
    if c_dim == 0:
        if class_idx is not None:
            raise GanError(f"class {class_idx} given, but the model is unconditional (c_dim = 0)")
        return c
    if class_idx is None:
        raise GanError(f"the model is conditional on {c_dim} classes: give a class in [0, {c_dim - 1}]")
    if not 0 <= class_idx < c_dim:
        raise GanError(f"class {class_idx} is out of range: the model has classes 0-{c_dim - 1}")
    c[0, class_idx] = 1
    return c


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """[N, C, H, W] float in about [-1, 1] -> [N, H, W, C] uint8, as the official scripts convert."""
    x = torch.as_tensor(images)
    if x.ndim != 4:
        raise GanError(f"expected images [N, C, H, W], got shape {tuple(x.shape)}")
    x = (x.permute(0, 2, 3, 1).to(torch.float32) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.cpu().numpy()


def parse_vec2(text: str, what: str = "translate") -> tuple[float, float]:
    """'0.3,1' -> (0.3, 1.0), the official `--translate` syntax."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        x, y = (float(p) for p in parts)
    except ValueError:
        raise GanError(f"invalid {what} {text!r}: expected two numbers like '0.3,1'") from None
    if not (np.isfinite(x) and np.isfinite(y)):
        raise GanError(f"invalid {what} {text!r}: values must be finite")
    return x, y


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device, refused early when it is not usable here (rather than failing mid-forward)."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise GanError(f"unknown device {device!r}: use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GanError("device cuda was asked for, but CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise GanError(f"unsupported device {device!r}: use cpu or cuda")
    return dev


class Sampler:
    """A generator held on one device in eval mode; every call runs without autograd.

    Batches: `images(seeds, batch_size=B)` maps and synthesises B seeds per forward pass. The rows of a
    batch do not interact, so a batch gives the images one-at-a-time gives up to float32 summation order
    inside the convolution kernels (measured on CPU on the official fixtures: at most 5e-6 between a
    batch of 4 and single images), which can move a uint8 pixel by at most one grey level.

    noise_mode "random": the official scripts draw the per-layer noise from torch's global generator, so
    the same seed gives different images from run to run. We reseed the noise from the image's seed, one
    image per forward pass, so a seed gives the same image every time and in any batch; the global torch
    RNG state is saved and restored around it. StyleGAN3 has no noise inputs: the mode is accepted and
    has no effect there.
    """

    def __init__(self, G: Generator, device: str | torch.device = "cpu", force_fp32: bool = False) -> None:
        self.device = resolve_device(device)
        self.G = G.to(self.device).eval()
        self.force_fp32 = force_fp32

    @property
    def config(self) -> GeneratorConfig:
        return self.G.config

    @property
    def z_dim(self) -> int:
        return int(self.G.z_dim)

    @property
    def c_dim(self) -> int:
        return int(self.G.c_dim)

    @property
    def num_ws(self) -> int:
        return int(self.G.num_ws)

    @property
    def is_stylegan3(self) -> bool:
        return str(self.G.config.architecture).startswith("stylegan3")

    # ----------------------------------------------------------------------------------------------
    # z and w

    def zs_for_seeds(self, seeds: Sequence[int]) -> torch.Tensor:
        """[N, z_dim] float32 on the device, one RandomState draw per seed."""
        if len(seeds) == 0:
            raise GanError("no seeds given")
        z = np.concatenate([seed_to_z(int(s), self.z_dim) for s in seeds])
        return torch.from_numpy(z).to(self.device, torch.float32)

    def labels(self, n: int, class_idx: int | None) -> torch.Tensor:
        """[n, c_dim] one-hot labels (all the same class), [n, 0] for an unconditional model."""
        c = class_to_c(class_idx, self.c_dim)
        return torch.from_numpy(c).to(self.device).expand(n, -1)

    def ws_from_zs(
        self,
        zs: torch.Tensor,
        psi: float = 1.0,
        cutoff: int | None = None,
        class_idx: int | None = None,
    ) -> torch.Tensor:
        """[N, z_dim] -> [N, num_ws, w_dim], truncated towards w_avg with psi in the first `cutoff` ws."""
        _check_truncation(psi, cutoff, self.num_ws)
        assert zs.ndim == 2 and zs.shape[1] == self.z_dim, (
            f"zs must be [N, {self.z_dim}], got {tuple(zs.shape)}"
        )
        c = self.labels(zs.shape[0], class_idx)
        with torch.inference_mode():
            ws: torch.Tensor = self.G.mapping(zs.to(self.device, torch.float32), c, psi=psi, cutoff=cutoff)
        return ws

    def ws_for_seeds(
        self,
        seeds: Sequence[int],
        psi: float = 1.0,
        cutoff: int | None = None,
        class_idx: int | None = None,
    ) -> torch.Tensor:
        """[N, num_ws, w_dim]: the mapping of each seed's z, as `G.mapping(z, c, psi, cutoff)`."""
        return self.ws_from_zs(self.zs_for_seeds(seeds), psi=psi, cutoff=cutoff, class_idx=class_idx)

    # ----------------------------------------------------------------------------------------------
    # synthesis

    def transform(self, translate: tuple[float, float] | None, rotate: float | None) -> torch.Tensor | None:
        """The StyleGAN3 input transform for a translate/rotate request; None keeps the model's own.

        The official `gen_images.py` always overwrites the model's transform with the inverse of
        `make_transform(translate, rotate)`; with neither given we pass nothing, which leaves the
        identity that every trained model carries.
        """
        if translate is None and rotate is None:
            return None
        if not self.is_stylegan3:
            raise GanError("translate and rotate need a StyleGAN3 model (they move its Fourier input)")
        m = make_transform(translate=translate or (0.0, 0.0), rotate_deg=float(rotate or 0.0))
        return m.to(self.device, torch.float32)  # [3, 3], already the inverse the network expects

    def synthesize(
        self,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "const",
        transform: torch.Tensor | None = None,
        noise_seeds: Sequence[int] | None = None,
        batch_size: int = 8,
    ) -> torch.Tensor:
        """[N, num_ws, w_dim] -> float images [N, C, H, W] on the CPU, `batch_size` rows per forward pass.

        `transform` is one [3, 3] matrix for all rows or [N, 3, 3]. With noise_mode "random",
        `noise_seeds` (one per row) make the noise reproducible; without them it comes from torch's
        global generator as in the official scripts.
        """
        check_noise_mode(noise_mode)
        _check_batch_size(batch_size)
        ws = torch.as_tensor(ws)
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.G.config.w_dim):
            raise GanError(
                f"ws must be [N, {self.num_ws}, {self.G.config.w_dim}] for this model, got {tuple(ws.shape)}"
            )
        if noise_seeds is not None and len(noise_seeds) != ws.shape[0]:
            raise GanError(f"{len(noise_seeds)} noise seeds for {ws.shape[0]} images")
        per_row_noise = noise_mode == "random" and noise_seeds is not None and not self.is_stylegan3
        step = 1 if per_row_noise else batch_size
        out = []
        for start in range(0, ws.shape[0], step):
            rows = slice(start, start + step)
            t = transform[rows] if transform is not None and transform.ndim == 3 else transform
            rng = (
                _seeded_torch_rng(noise_seeds[start], self.device)
                if per_row_noise and noise_seeds is not None
                else contextlib.nullcontext()
            )
            with torch.inference_mode(), rng:
                extra = {} if t is None else {"transform": t}
                img = self.G.synthesis(
                    ws[rows].to(self.device, torch.float32),
                    noise_mode=noise_mode,
                    force_fp32=self.force_fp32,
                    **extra,
                )
            out.append(img.float().cpu())
        return torch.cat(out)

    def images_from_ws(
        self,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "const",
        translate: tuple[float, float] | None = None,
        rotate: float | None = None,
        noise_seeds: Sequence[int] | None = None,
        batch_size: int = 8,
    ) -> np.ndarray:
        """uint8 [N, H, W, C] from given ws (a projection's, a mix's, a walk's frames)."""
        t = self.transform(translate, rotate)
        img = self.synthesize(ws, noise_mode, transform=t, noise_seeds=noise_seeds, batch_size=batch_size)
        return to_uint8(img)

    def render(
        self,
        seeds: Sequence[int],
        psi: float = 1.0,
        cutoff: int | None = None,
        noise_mode: NoiseMode = "const",
        class_idx: int | None = None,
        translate: tuple[float, float] | None = None,
        rotate: float | None = None,
        batch_size: int = 8,
    ) -> torch.Tensor:
        """Float images [N, C, H, W] for seeds: what `G(z, c, psi, cutoff, noise_mode)` gives."""
        check_noise_mode(noise_mode)
        _check_batch_size(batch_size)
        t = self.transform(translate, rotate)
        out = []
        for chunk in _chunks(list(seeds), batch_size):
            ws = self.ws_for_seeds(chunk, psi=psi, cutoff=cutoff, class_idx=class_idx)
            out.append(self.synthesize(ws, noise_mode, transform=t, noise_seeds=chunk, batch_size=batch_size))
        return torch.cat(out)

    def images(
        self,
        seeds: Sequence[int],
        psi: float = 1.0,
        cutoff: int | None = None,
        noise_mode: NoiseMode = "const",
        class_idx: int | None = None,
        translate: tuple[float, float] | None = None,
        rotate: float | None = None,
        batch_size: int = 8,
    ) -> np.ndarray:
        """uint8 [N, H, W, C] for seeds, the pixels `gen_images.py` writes (noise "random" excepted)."""
        img = self.render(seeds, psi, cutoff, noise_mode, class_idx, translate, rotate, batch_size)
        return to_uint8(img)


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextlib.contextmanager
def _seeded_torch_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run with torch's global generator seeded from `seed`, restoring its previous state afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise GanError(f"batch size must be >= 1, got {batch_size}")


def _check_truncation(psi: float, cutoff: int | None, num_ws: int) -> None:
    if not np.isfinite(psi):
        raise ConfigError(f"truncation psi must be a finite number, got {psi}")
    if cutoff is not None and not 1 <= cutoff <= num_ws:
        raise ConfigError(f"truncation cutoff must be in [1, {num_ws}] for this model, got {cutoff}")
