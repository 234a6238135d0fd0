"""The committed demo model (worker/assets/demo/): it loads through the public loader, has the config
that scripts/train_demo_model.sh trains and PROVENANCE.md states, samples the same images every time,
and has learnt something: its images are neither flat nor all alike, and have a skin-coloured face in
the centre as every training image does (an untrained generator of the same config does not)."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan.config import StyleGAN2SynthesisConfig
from gan.generator import build_generator
from gan.io.checkpoint import load_network, read_network
from gan.sampling import Sampler

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "worker" / "assets" / "demo"
MODEL = DEMO / "cartoon-faces-64.safetensors"
SEEDS = list(range(32))  # the preview grid's seeds, 8 per row (scripts/train_demo_model.sh)


def _load_script(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sampler() -> Sampler:
    return Sampler(load_network(MODEL))


@pytest.fixture(scope="module")
def images(sampler: Sampler) -> np.ndarray:
    return sampler.images(SEEDS).astype(np.float64)  # [N, H, W, C]


def test_one_small_model_file_with_licence_and_source() -> None:
    # worker/demo_model.py registers the only *.safetensors in the folder.
    assert sorted(p.name for p in DEMO.glob("*.safetensors")) == [MODEL.name]
    assert MODEL.stat().st_size < 25 * 2**20  # the size budget for a file kept in git
    loaded = read_network(MODEL)
    assert loaded.format == "stylegan-service"
    assert "Apache-2.0" in loaded.metadata["license"]
    assert "kimg" in loaded.metadata["source"]  # which checkpoint of the run it is


def test_config_is_the_one_trained(sampler: Sampler) -> None:
    config = sampler.config
    assert (config.architecture, config.img_resolution, config.img_channels) == ("stylegan2", 64, 3)
    assert (config.z_dim, config.w_dim, config.c_dim) == (128, 128, 0)
    assert config.mapping.num_layers == 2
    synthesis = config.synthesis
    assert isinstance(synthesis, StyleGAN2SynthesisConfig)
    assert (synthesis.channel_base, synthesis.channel_max) == (2048, 64)
    assert sampler.num_ws == 10  # 2 per block 4..64 px, as the official StyleGAN2 counts them


def test_sampling_is_deterministic(sampler: Sampler, images: np.ndarray) -> None:
    again = sampler.images(SEEDS[:4], batch_size=1).astype(np.float64)
    # Batch size may move a pixel by one grey level (see gan.sampling.Sampler), never more.
    assert np.abs(again - images[:4]).max() <= 1
    torch.manual_seed(1234)  # the global RNG plays no part with noise "const"
    np.testing.assert_array_equal(sampler.images(SEEDS[:8]), images[:8].astype(np.uint8))  # same batch


def test_images_are_not_degenerate(images: np.ndarray) -> None:
    # Each image has structure (a face on a background, not one flat colour).
    assert images.std(axis=(1, 2, 3)).min() > 20
    # Different seeds give different images: no two of the 32 are near copies...
    flat = images.reshape(len(images), -1)
    distance = np.abs(flat[:, None] - flat[None]).mean(-1)  # [N, N] mean absolute difference
    assert distance[~np.eye(len(images), dtype=bool)].min() > 5
    # ...and the set varies everywhere, not only in a corner (no mode collapse).
    assert images.std(axis=0).mean() > 25


def _skin_centred(images: np.ndarray) -> np.ndarray:
    """Per image: is the mean colour of the central 16x16 pixels a skin tone? Every tone in the
    script's palette has R > G > B (jitter kept), and the face covers the centre of every training
    image, so all training images pass; random colours pass 1 time in 6."""
    centre = images[:, 24:40, 24:40].mean(axis=(1, 2))  # [N, 3]
    return (centre[:, 0] > centre[:, 1]) & (centre[:, 1] > centre[:, 2])


def test_samples_have_a_face_where_the_training_faces_are(sampler: Sampler, images: np.ndarray) -> None:
    faces = _load_script("make_cartoon_faces")
    reals = np.stack([np.asarray(faces.draw_face(np.random.default_rng([0, i]), 64)) for i in range(64)])
    assert _skin_centred(reals.astype(np.float64)).all()  # the property holds for the training set
    torch.manual_seed(0)
    untrained = Sampler(build_generator(sampler.config)).images(SEEDS).astype(np.float64)
    assert _skin_centred(untrained).mean() < 0.5  # and is not given by the architecture alone
    assert _skin_centred(images).mean() >= 0.9
    # The face stands out from its background (the corners), as in every training image.
    corners = np.concatenate(
        [images[:, :8, :8], images[:, :8, -8:], images[:, -8:, :8], images[:, -8:, -8:]], axis=1
    ).mean(axis=(1, 2))  # [N, 3]
    centre = images[:, 24:40, 24:40].mean(axis=(1, 2))
    assert np.median(np.abs(centre - corners).sum(axis=1)) > 30


def test_preview_is_this_models_grid(images: np.ndarray) -> None:
    # The preview shown to people (and in PROVENANCE.md) must come from the committed weights.
    preview = np.asarray(Image.open(io.BytesIO((DEMO / "preview.png").read_bytes())).convert("RGB"))
    assert preview.shape == (4 * 64, 8 * 64, 3)
    cells = preview.reshape(4, 64, 8, 64, 3).transpose(0, 2, 1, 3, 4).reshape(32, 64, 64, 3)
    assert np.abs(cells.astype(np.float64) - images).max() <= 1
