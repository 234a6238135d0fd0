"""Tiny synthetic training sets and options shared by the training-loop tests (imported, not a conftest,
so it cannot clash with fixtures of the other tests in this folder)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gan.training.options import TrainOptions


def write_image_folder(
    root: Path, count: int = 16, resolution: int = 16, classes: int = 0, seed: int = 0
) -> Path:
    """Images of smooth random colour blobs, in the official layout (PNGs + dataset.json)."""
    rng = np.random.RandomState(seed)
    root.mkdir(parents=True, exist_ok=True)
    labels = []
    yy, xx = np.mgrid[0:resolution, 0:resolution] / resolution
    for i in range(count):
        colour = rng.uniform(0, 255, size=3)
        cx, cy = rng.uniform(0.2, 0.8, size=2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) * 20)[..., None]
        img = (blob * colour + (1 - blob) * 40).clip(0, 255).astype(np.uint8)
        name = f"img{i:05d}.png"
        Image.fromarray(img, "RGB").save(root / name)
        labels.append([name, i % classes] if classes else None)
    (root / "dataset.json").write_text(json.dumps({"labels": labels if classes else None}))
    return root


def tiny_options(data: Path, outdir: Path, **overrides: Any) -> TrainOptions:
    """A 16 px StyleGAN2 with 16 channels everywhere: one iteration takes a fraction of a second."""
    base: dict[str, Any] = dict(
        data=data,
        outdir=outdir,
        cfg="stylegan2",
        kimg=0.032,  # 8 iterations of 4 images
        batch=4,
        tick=0.008,  # a tick every 2 iterations
        snap=2,
        seed=1,
        device="cpu",
        fp32=True,
        cbase=256,
        cmax=16,
        map_layers=2,
        z_dim=16,
        w_dim=16,
        mbstd_group=2,
        aug="noaug",
        preview_images=8,
        deterministic=True,
        export=False,
    )
    base.update(overrides)
    return TrainOptions(**base)


@pytest.fixture()
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("data") / "set")


@pytest.fixture()
def make_options(image_folder: Path, tmp_path: Path) -> Callable[..., TrainOptions]:
    def make(name: str = "run", **overrides: Any) -> TrainOptions:
        return tiny_options(overrides.pop("data", image_folder), tmp_path / name, **overrides)

    return make
