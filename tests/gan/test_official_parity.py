"""Golden parity with NVIDIA's code on every official fixture (StyleGAN2-ADA, StyleGAN3, TF StyleGAN2).

Each folder under ../shared/fixtures/official/ (globbed, never listed) holds a network pickle and what the
official scripts produced from it (meta.json says how). The network goes through the public loaders
(`gan.io.official_pickle.load_official_networks`, `gan.io.tf_pickle.load_tf_networks`), then our generator must reproduce the mapping outputs,
the images at every psi, the style-mix images and the PNG bytes. The loaded config must also agree
with meta.json's `init_kwargs` (architecture, dimensions, num_ws).

Tolerances:
- 1e-4 absolute on ws and images (values of order 1): the fixtures were computed in float32 on CPU by the
  official reference ops; ours sum the same products in another order (measured differences < 1e-5).
- one grey level on PNGs: a pixel whose x * 127.5 + 128 lies within ~1e-3 of an integer can truncate to
  the neighbouring value under a float32 difference far below the 1e-4 above.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gan.config import (
    GeneratorConfig,
    MappingConfig,
    StyleGAN2SynthesisConfig,
    StyleGAN3SynthesisConfig,
)
from gan.generator import Generator
from gan.io.official_pickle import load_official_networks
from gan.io.tf_pickle import load_tf_networks

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "official"
FIXTURE_DIRS = sorted(p.parent for p in FIXTURES.glob("*/meta.json"))
ATOL = 1e-4  # see the module docstring
PNG_TOLERANCE = 1  # grey levels, see the module docstring


def test_fixtures_are_present() -> None:
    assert FIXTURE_DIRS, f"no fixtures under {FIXTURES}: an empty glob must not pass silently"


def config_from_meta(init_kwargs: dict[str, Any]) -> GeneratorConfig:
    """The official `Generator(**init_kwargs)` as our config: StyleGAN2-ADA nests `synthesis_kwargs`,
    StyleGAN3 passes them flat and tells T from R by its radial filters."""
    kwargs = dict(init_kwargs)
    dims = {k: kwargs.pop(k) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")}
    mapping_kwargs = dict(kwargs.pop("mapping_kwargs", {}))
    if "synthesis_kwargs" in kwargs:
        synth_kwargs = dict(kwargs.pop("synthesis_kwargs"))
        if "resample_filter" in synth_kwargs:
            synth_kwargs["resample_filter"] = tuple(synth_kwargs["resample_filter"])
        assert not kwargs, f"unexpected init kwargs {sorted(kwargs)}"
        return GeneratorConfig(
            architecture="stylegan2",
            mapping=MappingConfig(**mapping_kwargs),
            synthesis=StyleGAN2SynthesisConfig(**synth_kwargs),
            **dims,
        )
    synthesis = StyleGAN3SynthesisConfig(**kwargs)
    mapping_kwargs.setdefault("num_layers", 2)  # the StyleGAN3 mapping defaults
    mapping_kwargs.setdefault("w_avg_beta", 0.998)
    return GeneratorConfig(
        architecture="stylegan3-r" if synthesis.use_radial_filters else "stylegan3-t",
        mapping=MappingConfig(**mapping_kwargs),
        synthesis=synthesis,
        **dims,
    )


def load_with_public_loader(path: Path, meta: dict[str, Any]) -> Generator:
    """G_ema through the library's loaders: TensorFlow pickles (meta.json describes their `tf_pickle`
    layout) through `load_tf_networks`, PyTorch pickles through `load_official_networks`."""
    if "tf_pickle" in meta:
        G = load_tf_networks(path, which=("G_ema",))["G_ema"]
    else:
        G = load_official_networks(path, which=("G_ema",))["G_ema"]
    assert isinstance(G, Generator)
    return G


@functools.cache
def load_fixture(folder: Path) -> tuple[Generator, dict[str, Any], dict[str, np.ndarray]]:
    meta = json.loads((folder / "meta.json").read_text())
    G = load_with_public_loader(folder / "network.pkl", meta)
    expected_config = config_from_meta(meta["init_kwargs"])
    for name in ("architecture", "z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "num_ws"):
        assert getattr(G.config, name) == getattr(expected_config, name), name
    assert G.config.synthesis == expected_config.synthesis
    assert G.config.mapping.num_layers == expected_config.mapping.num_layers
    with np.load(folder / "expected.npz") as npz:
        expected = {k: npz[k] for k in npz.files}
    return G.eval().requires_grad_(False), meta, expected


def seed_z(seed: int, z_dim: int) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim))  # [1, z_dim], as meta["seed_to_z"]


def seed_c(seed: int, c_dim: int) -> torch.Tensor:
    """meta["conditional_label"]: one-hot at seed % c_dim; an empty [1, 0] label when unconditional."""
    c = torch.zeros(1, c_dim)
    if c_dim:
        c[0, seed % c_dim] = 1
    return c


def to_png_array(img: torch.Tensor) -> np.ndarray:
    """meta["png"]: [1, C, H, W] in about [-1, 1] -> [H, W, C] uint8 (the cast truncates, as torch's does)."""
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].numpy()


fixture_dirs = pytest.mark.parametrize("folder", FIXTURE_DIRS, ids=[p.name for p in FIXTURE_DIRS])


@fixture_dirs
def test_mapping_and_images_match(folder: Path) -> None:
    G, meta, expected = load_fixture(folder)
    for seed in meta["seeds"]:
        z, c = seed_z(seed, G.z_dim), seed_c(seed, G.c_dim)
        ws = G.mapping(z, c)  # [1, num_ws, w_dim]
        np.testing.assert_allclose(
            ws.numpy(), expected[f"ws_seed{seed}"], atol=ATOL, rtol=0, err_msg=f"ws {seed}"
        )
        for psi in meta["psis"]:
            img = G(z, c, psi=psi, noise_mode=meta["noise_mode"], force_fp32=True)
            np.testing.assert_allclose(
                img.numpy(),
                expected[f"seed{seed}_psi{psi}"],
                atol=ATOL,
                rtol=0,
                err_msg=f"seed {seed} psi {psi}",
            )


@fixture_dirs
def test_pngs_match(folder: Path) -> None:
    G, meta, _ = load_fixture(folder)
    for seed in meta["seeds"]:
        z, c = seed_z(seed, G.z_dim), seed_c(seed, G.c_dim)
        for psi in meta["psis"]:
            ours = to_png_array(G(z, c, psi=psi, noise_mode=meta["noise_mode"], force_fp32=True))
            theirs = np.asarray(Image.open(folder / f"seed{seed:04d}_psi{psi}.png").convert("RGB"))
            assert ours.shape == theirs.shape
            diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
            assert diff.max() <= PNG_TOLERANCE, f"seed {seed} psi {psi}: {int(diff.max())} grey levels"


@fixture_dirs
def test_style_mix_matches(folder: Path) -> None:
    G, meta, expected = load_fixture(folder)
    mix = meta.get("mix")
    if not mix:
        pytest.skip("meta.json lists no style mix for this fixture")

    def truncated_ws(seed: int) -> torch.Tensor:
        return G.mapping(seed_z(seed, G.z_dim), seed_c(seed, G.c_dim), psi=mix["psi"])  # [1, num_ws, w_dim]

    # The official style_mixing.py: truncate both, then copy the chosen layers' w from column into row.
    for row in mix["rows"]:
        for col in mix["cols"]:
            ws = truncated_ws(row).clone()
            ws[:, mix["styles"]] = truncated_ws(col)[:, mix["styles"]]
            img = G.synthesis(ws, noise_mode=meta["noise_mode"], force_fp32=True)
            np.testing.assert_allclose(
                img.numpy(), expected[f"mix_{row}_{col}"], atol=ATOL, rtol=0, err_msg=f"mix {row}-{col}"
            )
