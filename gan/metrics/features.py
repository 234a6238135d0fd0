"""Detector features of a dataset's images and of a generator's samples, as the official metric_utils.

Generated images are quantised to uint8 exactly as the official code does before the detector sees them
(`(x * 127.5 + 128).clamp(0, 255)` truncated to uint8), and grey images are repeated to three channels,
so real and generated images reach the detector in the same form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from gan.metrics.detector import FeatureDetector

ProgressFn = Callable[[str, int, int], None]  # (stage, items done, items total)


class ImageSet(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]: ...
    def get_label(self, idx: int) -> np.ndarray: ...


def _to_detector_input(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    return images


def dataset_features(
    dataset: ImageSet,
    detector: FeatureDetector,
    max_items: int | None = None,
    batch: int = 64,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Features [N, D] of the first `max_items` items (all when None), in dataset order."""
    total = len(dataset) if max_items is None else min(len(dataset), max_items)
    out = []
    for start in range(0, total, batch):
        imgs = np.stack(
            [dataset[i][0] for i in range(start, min(start + batch, total))]
        )  # [B, C, H, W] uint8
        x = _to_detector_input(torch.from_numpy(imgs).to(device))
        out.append(detector(x).cpu().numpy().astype(np.float64))
        if progress is not None:
            progress("dataset features", min(start + batch, total), total)
    return np.concatenate(out)


def generator_features(
    G: Any,
    detector: FeatureDetector,
    num: int,
    batch: int = 64,
    device: str | torch.device = "cpu",
    labels_from: ImageSet | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Features [num, D] of `num` samples of G (z ~ N(0, I), psi = 1, random noise as officially).

    A conditional G draws its labels from random items of `labels_from`, the official choice: the
    generated class mix then follows the dataset's.
    """
    z_dim, c_dim = int(G.z_dim), int(G.c_dim)
    if c_dim > 0 and labels_from is None:
        raise ValueError("a conditional generator needs a labelled dataset to draw labels from")
    # All z up front, so the samples do not depend on the batch size (torch draws a [8, D] and a
    # [16, D] block differently); the noise inputs draw from the global generator, seeded here and
    # restored afterwards, so a call is reproducible without disturbing the caller's RNG.
    z_all = torch.randn([num, z_dim], generator=torch.Generator().manual_seed(seed))
    rng = np.random.default_rng(seed)
    out = []
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, num, batch):
            z = z_all[start : start + batch].to(device)
            b = z.shape[0]
            if c_dim > 0:
                assert labels_from is not None
                idx = rng.integers(len(labels_from), size=b)
                c = torch.from_numpy(np.stack([labels_from.get_label(int(i)) for i in idx])).to(device)
            else:
                c = torch.zeros([b, 0], device=device)
            img = G(z, c, noise_mode="random")
            img = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)
            out.append(detector(_to_detector_input(img)).cpu().numpy().astype(np.float64))
            if progress is not None:
                progress("generator features", start + b, num)
    return np.concatenate(out)
