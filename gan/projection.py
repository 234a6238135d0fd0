"""Projection (GAN inversion): the w whose image is closest to a target image.

The method of the StyleGAN2 paper, section 5 ("Projection of images to latent space"), with the
parameters of the official stylegan2-ada-pytorch `projector.py`:

- start from the average w of `w_avg_samples` mapped z (drawn from RandomState(123), as the official),
  and use the spread of those ws, `w_std`, to scale the exploration noise;
- optimise w with Adam on the perceptual distance (LPIPS on VGG16) between the generated and target
  images, both area-downsampled to 256 px when larger (VGG16 was trained on 224 px images);
- add Gaussian noise to w, ramped down quadratically to zero over the first `noise_ramp_length` of the
  run, so early steps explore rather than fall into the nearest local minimum;
- learning rate: linear ramp-up over the first `lr_rampup_length`, cosine ramp-down over the last
  `lr_rampdown_length`;
- StyleGAN2's per-layer noise maps are optimised too, from fresh N(0, 1) draws, with the paper's
  multi-scale regulariser (squared autocorrelation at a one-pixel shift, summed over a pyramid down to
  8x8) that keeps them from encoding the image, and renormalised to zero mean, unit variance after every
  step. StyleGAN3 has no noise inputs: nothing of this applies there.

Two spaces: "w" optimises one w shared by every layer (as the official projector); "w+" one w per layer
(Abdal et al., Image2StyleGAN), which reconstructs more closely but strays further from what the
mapping network produces, so it edits and mixes less well.

The image and w that come back are rendered with the model's own constant noise (noise_mode "const"),
not with the noise maps the projector tuned: the projected w is the product, and anyone rendering it
later (the service, `stylegan generate`) has only the model's noise. The official command line does
the same (it renders its PNG with the network it loaded, not the optimised copy).

Determinism: all randomness (the noise maps' start, the exploration noise) comes from a generator seeded
with `seed`, so a run on the CPU repeats bit for bit. The model passed in is never modified.
"""

from __future__ import annotations

import copy
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F

from gan.errors import ConfigError, FormatError, GanError
from gan.perceptual import PerceptualDistance
from gan.sampling import class_to_c, resolve_device, to_uint8

if TYPE_CHECKING:
    import PIL.Image

    from gan.generator import Generator

Space = Literal["w", "w+"]
SPACES: tuple[Space, ...] = ("w", "w+")

# The official projector's fixed seed for the z samples behind w_avg and w_std, independent of `seed`
# so that projections with different seeds start from the same point.
W_STATS_SEED = 123
# VGG16 sees at most 256 px (official); larger images are area-downsampled, which averages pixels and
# so does not alias.
PERCEPTUAL_SIZE = 256
# Pixel budget for a target image before it is decoded (PIL's own decompression-bomb limit is a warning
# up to 2x its default; we refuse earlier and with our error).
MAX_TARGET_PIXELS = 64 * 2**20


# ------------------------------------------------------------------------------------------------------
# The target image


def open_image(source: str | os.PathLike[str] | bytes) -> PIL.Image.Image:
    """A decoded image from a file or its bytes; anything PIL cannot read is a `FormatError`."""
    import PIL.Image

    name = "image bytes" if isinstance(source, bytes) else os.fspath(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise FormatError(f"target image {name!r} does not exist or is not a file")
    try:
        image = PIL.Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        width, height = image.size
        if width * height > MAX_TARGET_PIXELS:
            raise FormatError(f"{name} is {width}x{height}: more than {MAX_TARGET_PIXELS} pixels")
        image.load()
    except (PIL.UnidentifiedImageError, PIL.Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise FormatError(f"cannot read {name} as an image: {exc}") from exc
    return image


def prepare_target(image: PIL.Image.Image | np.ndarray, resolution: int) -> torch.Tensor:
    """The target at the model's resolution: uint8 [resolution, resolution, 3].

    The rule, as the official projector's: convert to RGB (alpha dropped, grey repeated), crop the
    largest centred square, resize it with LANCZOS. An image smaller than the model is enlarged by the
    same resize; nothing else is changed.
    """
    import PIL.Image

    if resolution < 1:
        raise ConfigError(f"resolution must be >= 1, got {resolution}")
    if isinstance(image, np.ndarray):
        if (
            image.dtype != np.uint8
            or image.ndim not in (2, 3)
            or (image.ndim == 3 and image.shape[2] not in (1, 3, 4))
        ):
            raise FormatError(
                f"expected a uint8 image [H, W] or [H, W, 1|3|4], got {image.dtype} {image.shape}"
            )
        image = PIL.Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    rgb = image.convert("RGB")
    w, h = rgb.size
    if w < 1 or h < 1:
        raise FormatError(f"empty image {w}x{h}")
    s = min(w, h)
    rgb = rgb.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
    rgb = rgb.resize((resolution, resolution), PIL.Image.Resampling.LANCZOS)
    return torch.from_numpy(np.array(rgb, dtype=np.uint8))  # [R, R, 3]


def _target_chw(target: torch.Tensor | np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 [R, R, 3] or float [3, R, R] in [0, 255] -> float32 [3, R, R] in [0, 255]."""
    t = torch.as_tensor(target)
    want = (resolution, resolution)
    if t.dtype == torch.uint8 and t.ndim == 3 and t.shape[2] == 3 and tuple(t.shape[:2]) == want:
        return t.permute(2, 0, 1).to(torch.float32)
    if t.is_floating_point() and t.ndim == 3 and t.shape[0] == 3 and tuple(t.shape[1:]) == want:
        if not bool(torch.isfinite(t).all()) or float(t.min()) < 0 or float(t.max()) > 255:
            raise GanError("a float target must be finite and within [0, 255]")
        return t.to(torch.float32)
    raise GanError(
        f"target must be uint8 [{resolution}, {resolution}, 3] or float [3, {resolution}, {resolution}] "
        f"in [0, 255] for this model, got {t.dtype} {list(t.shape)} (see prepare_target)"
    )


def perceptual_resize(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> at most 256 px, by area averaging as the official projector."""
    if images.shape[2] > PERCEPTUAL_SIZE:
        images = F.interpolate(images, size=(PERCEPTUAL_SIZE, PERCEPTUAL_SIZE), mode="area")
    return images


# ------------------------------------------------------------------------------------------------------
# Schedules (official projector.py)


def learning_rate(step: int, num_steps: int, initial_lr: float, rampdown: float, rampup: float) -> float:
    """Linear ramp-up over the first `rampup` of the run, cosine ramp-down over the last `rampdown`."""
    t = step / num_steps
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp *= min(1.0, t / rampup)
    return initial_lr * ramp


def w_noise_scale(step: int, num_steps: int, w_std: float, noise_factor: float, ramp_length: float) -> float:
    """Exploration noise on w: `noise_factor * w_std`, falling quadratically to 0 at `ramp_length`."""
    t = step / num_steps
    return w_std * noise_factor * max(0.0, 1.0 - t / ramp_length) ** 2


def noise_regularization(noise_maps: list[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2 paper, section 5: sum over a pyramid of each map of its squared autocorrelation at a
    one-pixel shift, both axes; zero for white noise, large when a map carries image structure."""
    reg = torch.zeros([])
    for buf in noise_maps:
        noise = buf[None, None]  # [1, 1, H, W], as avg_pool2d takes
        reg = reg.to(buf.device)
        while True:
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return reg


# ------------------------------------------------------------------------------------------------------
# Projection


@dataclass(frozen=True)
class ProjectionStep:
    """What the callback sees after each optimisation step."""

    step: int  # 0-based index of the step just taken
    num_steps: int
    loss: float  # distance + regularize_noise_weight * noise regularisation
    distance: float  # perceptual distance this step was measured on
    ws: torch.Tensor  # [1, num_ws, w_dim] after the step (without exploration noise), CPU
    images: torch.Tensor  # [1, 3, H, W] float in about [-1, 1]: the image the step was measured on, CPU


# Return True to stop after this step (a cancelled job); None or False to go on.
ProjectionCallback = Callable[[ProjectionStep], bool | None]


@dataclass(frozen=True)
class ProjectionResult:
    ws: torch.Tensor  # [1, num_ws, w_dim] float32, CPU: the projected w (the official npz's "w")
    # [steps_done, num_ws, w_dim]: ws after each step, for the video (space "w": a broadcast view).
    w_steps: torch.Tensor | None
    losses: list[float]  # per step
    distances: list[float]  # per step
    image: np.ndarray  # uint8 [H, W, 3]: `ws` rendered with the model's constant noise
    distance: float  # perceptual distance from `image` to the target
    steps_done: int
    stopped_early: bool  # the callback asked to stop
    space: Space
    seed: int


def w_stats(
    G: Generator, num_samples: int, device: torch.device, c: torch.Tensor, batch_size: int = 1000
) -> tuple[torch.Tensor, float]:
    """w_avg [1, 1, w_dim] and w_std = sqrt(E|w - w_avg|^2) over `num_samples` mapped z.

    w_std is the RMS distance to the mean over all w_dim coordinates together (the official scalar), the
    natural unit for noise added to a whole w vector. Mapped in batches so that 10000 samples of a
    1024 px model (18 ws each) never sit in memory at once; only the first w is kept (all equal before
    truncation).
    """
    z = np.random.RandomState(W_STATS_SEED).randn(num_samples, G.z_dim)
    chunks = []
    with torch.no_grad():
        for start in range(0, num_samples, batch_size):
            zc = torch.from_numpy(z[start : start + batch_size]).to(device, torch.float32)
            ws = G.mapping(zc, c.expand(zc.shape[0], -1))  # [n, num_ws, w_dim]
            chunks.append(ws[:, 0, :].to(torch.float64).cpu())
    w = torch.cat(chunks)  # [num_samples, w_dim]
    w_avg = w.mean(dim=0)
    w_std = float(((w - w_avg).square().sum() / num_samples).sqrt())
    return w_avg.to(torch.float32).reshape(1, 1, -1), w_std


def _check_args(space: str, num_steps: int, w_avg_samples: int, **positive: float) -> None:
    if space not in SPACES:
        raise ConfigError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    if num_steps < 1:
        raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
    if w_avg_samples < 2:
        raise ConfigError(f"w_avg_samples must be >= 2 (w_std needs a spread), got {w_avg_samples}")
    for name, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number, got {value}")


def project(
    G: Generator,
    target: torch.Tensor | np.ndarray,
    *,
    perceptual: PerceptualDistance,
    space: Space = "w",
    num_steps: int = 1000,
    initial_lr: float = 0.1,
    initial_noise_factor: float = 0.05,
    lr_rampdown_length: float = 0.25,
    lr_rampup_length: float = 0.05,
    noise_ramp_length: float = 0.75,
    regularize_noise_weight: float = 1e5,
    w_avg_samples: int = 10000,
    class_idx: int | None = None,
    seed: int = 303,
    device: str | torch.device = "cpu",
    keep_steps: bool = True,
    callback: ProjectionCallback | None = None,
) -> ProjectionResult:
    """Project `target` (uint8 [R, R, 3] from `prepare_target`, or float [3, R, R] in [0, 255]) into
    `space`. Defaults are the official projector's (seed 303 is its command line default).

    `keep_steps` keeps every step's w for a progress video: num_steps * num_ws * w_dim floats (37 MB for
    1000 steps of a 1024 px model in w+). A conditional model needs `class_idx` for its w statistics.
    """
    _check_args(
        space,
        num_steps,
        w_avg_samples,
        initial_lr=initial_lr,
        initial_noise_factor=initial_noise_factor,
        lr_rampdown_length=lr_rampdown_length,
        lr_rampup_length=lr_rampup_length,
        noise_ramp_length=noise_ramp_length,
    )
    if not (math.isfinite(regularize_noise_weight) and regularize_noise_weight >= 0):
        raise ConfigError(f"regularize_noise_weight must be >= 0, got {regularize_noise_weight}")
    if G.img_channels != 3:
        raise ConfigError(f"projection compares RGB images; this model has {G.img_channels} channels")
    dev = resolve_device(device)
    target_img = _target_chw(target, G.img_resolution).unsqueeze(0).to(dev)  # [1, 3, R, R]
    c = torch.from_numpy(class_to_c(class_idx, G.c_dim)).to(dev)  # [1, c_dim]

    # A private copy: its noise maps are overwritten and optimised, the caller's model stays as it was.
    G_opt = copy.deepcopy(G).eval().requires_grad_(False).to(dev)
    num_ws, w_dim = G_opt.num_ws, G_opt.w_dim
    w_avg, w_std = w_stats(G_opt, w_avg_samples, dev, c)
    perceptual = perceptual.to(dev)
    target_features = perceptual.features(perceptual_resize(target_img)).detach()  # [1, D]

    gen = torch.Generator(device=dev).manual_seed(seed)
    noise_maps = [buf for name, buf in G_opt.synthesis.named_buffers() if "noise_const" in name]
    model_noise = [buf.clone() for buf in noise_maps]
    for buf in noise_maps:
        buf.copy_(torch.randn(buf.shape, generator=gen, device=dev))
        buf.requires_grad_(True)

    layers = 1 if space == "w" else num_ws
    w_opt = w_avg.to(dev).repeat(1, layers, 1).requires_grad_(True)  # [1, 1 or num_ws, w_dim]
    optimizer = torch.optim.Adam([w_opt, *noise_maps], betas=(0.9, 0.999), lr=initial_lr)

    w_steps = torch.zeros([num_steps, layers, w_dim]) if keep_steps else None
    losses: list[float] = []
    distances: list[float] = []
    stopped = False
    for step in range(num_steps):
        lr = learning_rate(step, num_steps, initial_lr, lr_rampdown_length, lr_rampup_length)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # Image from w plus exploration noise, mapped to [0, 255] as VGG16 takes it.
        scale = w_noise_scale(step, num_steps, w_std, initial_noise_factor, noise_ramp_length)
        w_noise = torch.randn(w_opt.shape, generator=gen, device=dev) * scale
        ws = (w_opt + w_noise).expand(1, num_ws, w_dim)
        synth = G_opt.synthesis(ws, noise_mode="const")  # [1, 3, R, R] in about [-1, 1]
        synth_features = perceptual.features(perceptual_resize((synth + 1) * (255 / 2)))
        dist = (target_features - synth_features).square().sum()
        reg = noise_regularization(noise_maps) if noise_maps else torch.zeros([], device=dev)
        loss = dist + regularize_noise_weight * reg

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        # Keep the noise maps white: zero mean, unit variance (paper, section 5).
        with torch.no_grad():
            for buf in noise_maps:
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()

        w_now = w_opt.detach()
        if w_steps is not None:
            w_steps[step] = w_now[0].cpu()
        losses.append(float(loss.detach()))
        distances.append(float(dist.detach()))
        if callback is not None:
            info = ProjectionStep(
                step=step,
                num_steps=num_steps,
                loss=losses[-1],
                distance=distances[-1],
                ws=w_now.expand(1, num_ws, w_dim).cpu(),
                images=synth.detach().cpu(),
            )
            if callback(info):
                stopped = True
                break

    steps_done = len(losses)
    final_ws = w_opt.detach().expand(1, num_ws, w_dim).to(torch.float32).cpu().contiguous()
    # Rendered with the model's own constant noise, as anyone rendering the w later will.
    with torch.no_grad():
        for buf, original in zip(noise_maps, model_noise, strict=True):
            buf.requires_grad_(False).copy_(original)
        image = G_opt.synthesis(final_ws.to(dev), noise_mode="const")
        final_dist = float(
            (target_features - perceptual.features(perceptual_resize((image + 1) * (255 / 2)))).square().sum()
        )
    return ProjectionResult(
        ws=final_ws,
        w_steps=None if w_steps is None else w_steps[:steps_done].expand(steps_done, num_ws, w_dim),
        losses=losses,
        distances=distances,
        image=to_uint8(image)[0],
        distance=final_dist,
        steps_done=steps_done,
        stopped_early=stopped,
        space=space,
        seed=seed,
    )


def render_ws(G: Generator, ws: torch.Tensor) -> np.ndarray:
    """uint8 [N, H, W, 3] for ws [N, num_ws, w_dim] with the model's constant noise, on G's device."""
    dev = next(G.parameters()).device
    if ws.ndim != 3 or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
        raise GanError(f"ws must be [N, {G.num_ws}, {G.w_dim}] for this model, got {list(ws.shape)}")
    with torch.no_grad():
        return to_uint8(G.synthesis(ws.to(dev, torch.float32), noise_mode="const"))
