"""Perceptual distances between images, for projection (GAN inversion).

The StyleGAN2 paper's projector (section 5, "Projection of images to latent space") measures how far a
generated image is from the target with LPIPS (Zhang et al. 2018) on VGG16 features. NVIDIA ships that
network as a TorchScript module: `vgg16.pt` for the stylegan2-ada-pytorch projector (`projector.py`
loads it with `torch.jit.load`), and the same network pickled around its TorchScript archive as
`vgg16.pkl` for the stylegan3 metrics. Called as `vgg16(images, resize_images=False,
return_lpips=True)` on float images in [0, 255], it returns per-image feature vectors already
normalised and weighted so that the squared L2 distance between two of them *is* LPIPS.

Every distance here follows that shape: `features(images)` once per image, distance = the squared L2
between feature vectors. The projector computes the target's features once and reuses them each step.

Loading never unpickles: the file goes through `gan.metrics.detector.load_detector`, which reads a plain
TorchScript archive as is, finds the archive inside a pickle by reading opcodes only, checks the SHA-256
and caches downloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from gan.errors import FormatError, GanError
from gan.metrics.detector import DOWNLOAD_TIMEOUT_S, load_detector

# The file the official stylegan2-ada-pytorch projector.py downloads (a plain TorchScript archive).
# NVIDIA publishes no checksum for it; pass `sha256=` to pin the copy you trust. The pickled copy at
# `gan.metrics.detector.VGG16_URL` holds the same network and loads here too.
VGG16_LPIPS_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt"


@runtime_checkable
class PerceptualDistance(Protocol):
    """Images are float [N, 3, H, W] in [0, 255]; distance(a, b) = |features(a) - features(b)|^2 per row."""

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> [N, D], differentiable with respect to the images."""
        ...

    def __call__(self, img_a: torch.Tensor, img_b: torch.Tensor) -> torch.Tensor:
        """[N] distances."""
        ...

    def to(self, device: str | torch.device) -> PerceptualDistance: ...


def _check_images(images: torch.Tensor) -> None:
    if not images.is_floating_point() or images.ndim != 4 or images.shape[1] != 3:
        raise GanError(
            f"perceptual distances take float RGB images [N, 3, H, W] in [0, 255], "
            f"got {images.dtype} {list(images.shape)}"
        )


def feature_distance(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """Squared L2 per row: LPIPS when the features are the VGG16 file's `return_lpips` output."""
    assert fa.shape == fb.shape and fa.ndim == 2, f"features {list(fa.shape)} vs {list(fb.shape)}"
    return (fa - fb).square().sum(dim=1)  # [N]


# ------------------------------------------------------------------------------------------------------
# LPIPS on NVIDIA's VGG16


class VGG16LPIPS:
    """LPIPS with NVIDIA's TorchScript VGG16. `name` and `sha256` identify the file it came from."""

    def __init__(self, module: Any, name: str, sha256: str) -> None:
        # Gradients flow to the images only; ScriptModules lack requires_grad_, so set it per parameter.
        self.module = module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.name = name
        self.sha256 = sha256

    def to(self, device: str | torch.device) -> VGG16LPIPS:
        self.module = self.module.to(device)
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        # resize_images=False: the caller chooses the size (the projector area-downsamples to 256, as
        # the official one does); letting the network resize to 224 would blur the comparison again.
        f = self.module(images.to(torch.float32), resize_images=False, return_lpips=True)
        if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != images.shape[0]:
            shape = list(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise FormatError(f"{self.name}: return_lpips gave {shape}, expected [N, D]")
        return f

    def __call__(self, img_a: torch.Tensor, img_b: torch.Tensor) -> torch.Tensor:
        return feature_distance(self.features(img_a), self.features(img_b))


def load_vgg16_lpips(
    path_or_url: str | Path = VGG16_LPIPS_URL,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> VGG16LPIPS:
    """NVIDIA's VGG16 (`vgg16.pt`, or `vgg16.pkl` read without unpickling) from a path or a cached URL.

    A URL that cannot be fetched raises `gan.metrics.detector.DownloadError`; `timeout_s` bounds each
    network wait (see `fetch`)."""
    detector = load_detector(
        path_or_url, sha256=sha256, cache_dir=cache_dir, progress=progress, timeout_s=timeout_s
    )
    lpips = VGG16LPIPS(detector.module, detector.name, detector.sha256)
    return lpips.to(device)


# ------------------------------------------------------------------------------------------------------
# Stand-in for tests and offline use


class SimpleFeatureDistance(torch.nn.Module):
    """A fixed, untrained multi-scale feature distance, FOR TESTS AND OFFLINE USE ONLY.

    It is not LPIPS and says nothing about perceptual similarity beyond "these pixels and their local
    gradients agree at several scales"; projections made with it are blurrier than with VGG16. It exists
    so that projection can be tested, and tried on a machine that cannot fetch the VGG16 file, with no
    download. Features at each of `num_scales` scales (2x average pooling between them): the pixels in
    [-1, 1] and `channels` random 3x3 filters (drawn once from `seed`, unit norm) after a leaky ReLU.
    Each scale's block is divided by the square root of its size so that every scale weighs the same
    whatever the resolution, and the distance at a scale is a mean squared difference.
    """

    weight: torch.Tensor  # [channels, 3, 3, 3]

    def __init__(self, channels: int = 16, num_scales: int = 3, seed: int = 0) -> None:
        super().__init__()
        if channels < 1 or num_scales < 1:
            raise GanError(f"channels and num_scales must be >= 1, got {channels} and {num_scales}")
        g = torch.Generator().manual_seed(seed)
        weight = torch.randn([channels, 3, 3, 3], generator=g)
        weight = weight / weight.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        self.register_buffer("weight", weight)  # [channels, 3, 3, 3]
        self.num_scales = num_scales

    def features(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        x = images.to(torch.float32) / 127.5 - 1  # [N, 3, H, W]
        blocks = []
        for scale in range(self.num_scales):
            if scale > 0:
                if min(x.shape[2:]) < 2:
                    raise GanError(f"images too small for {self.num_scales} scales: {list(images.shape)}")
                x = F.avg_pool2d(x, 2)
            y = F.leaky_relu(F.conv2d(x, self.weight, padding=1), 0.2)  # [N, channels, h, w]
            block = torch.cat([x.flatten(1), y.flatten(1)], dim=1)
            blocks.append(block / block.shape[1] ** 0.5)
        return torch.cat(blocks, dim=1)  # [N, D]

    def forward(self, img_a: torch.Tensor, img_b: torch.Tensor) -> torch.Tensor:
        return feature_distance(self.features(img_a), self.features(img_b))
