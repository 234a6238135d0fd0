"""Golden parity of the StyleGAN3 synthesis with NVIDIA's code, on the stylegan3 fixtures.

For every fixture folder whose meta.json names the stylegan3 repository (globbed, never listed), our
generator gets the pickle's G_ema weights key for key and must reproduce `expected.npz`: the mapping
outputs, the images at every psi and the style-mix images. Tolerance 1e-4 absolute on images in about
[-1, 1]: the fixtures were computed in float32 on CPU by the official reference ops, and ours reorder a
few float32 sums (measured differences are below 2e-6).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gan.config import GeneratorConfig, MappingConfig, StyleGAN3SynthesisConfig
from gan.generator import Generator, build_generator
from gan.io.official_pickle import read_official_pickle

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "official"
ATOL = 1e-4


def _sg3_fixtures() -> list[Path]:
    return sorted(
        d for d in FIXTURES.glob("*/meta.json") if json.loads(d.read_text()).get("source_repo") == "stylegan3"
    )


SG3_FIXTURES = _sg3_fixtures()


def test_there_are_stylegan3_fixtures() -> None:
    assert SG3_FIXTURES, f"no stylegan3 fixtures under {FIXTURES}"  # an empty glob must not pass silently


def _config(init_kwargs: dict[str, Any]) -> GeneratorConfig:
    """meta.json's `Generator(**init_kwargs)`: StyleGAN3 passes synthesis arguments flat."""
    kwargs = dict(init_kwargs)
    mapping = MappingConfig(**kwargs.pop("mapping_kwargs", {}))
    dims = {k: kwargs.pop(k) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")}
    synthesis = StyleGAN3SynthesisConfig(**kwargs)
    architecture = "stylegan3-r" if synthesis.use_radial_filters else "stylegan3-t"
    return GeneratorConfig(architecture=architecture, mapping=mapping, synthesis=synthesis, **dims)


def _load(folder: Path) -> tuple[Generator, dict[str, Any]]:
    meta = json.loads((folder / "meta.json").read_text())
    G = build_generator(_config(meta["init_kwargs"])).eval()
    official = read_official_pickle(folder / "network.pkl")["G_ema"].state_dict()
    ours = G.state_dict()
    assert set(official) == set(ours), f"keys differ: {sorted(set(official) ^ set(ours))}"
    for key, tensor in official.items():
        assert tensor.shape == ours[key].shape, f"{key}: {list(tensor.shape)} vs {list(ours[key].shape)}"
    G.load_state_dict(official)
    return G, meta


def _z(seed: int, z_dim: int) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim))


def _c(seed: int, c_dim: int) -> torch.Tensor | None:
    """meta.json's conditional label: one-hot at index seed % c_dim (None when unconditional)."""
    if c_dim == 0:
        return None
    c = torch.zeros(1, c_dim)
    c[0, seed % c_dim] = 1
    return c


@pytest.mark.parametrize("meta_path", SG3_FIXTURES, ids=lambda p: p.parent.name)
def test_designed_filters_equal_the_pickled_ones(meta_path: Path) -> None:
    # Our SciPy design must give the very taps the official constructor stored.
    meta = json.loads(meta_path.read_text())
    G = build_generator(_config(meta["init_kwargs"]))
    official = read_official_pickle(meta_path.parent / "network.pkl")["G_ema"].state_dict()
    filters = [k for k in official if k.endswith(("up_filter", "down_filter"))]
    assert filters
    ours = G.state_dict()
    for key in filters:
        torch.testing.assert_close(ours[key], official[key], atol=1e-7, rtol=0, msg=key)


@pytest.mark.parametrize("meta_path", SG3_FIXTURES, ids=lambda p: p.parent.name)
def test_images_match_the_official_outputs(meta_path: Path) -> None:
    G, meta = _load(meta_path.parent)
    expected = np.load(meta_path.parent / "expected.npz")
    with torch.no_grad():
        for seed in meta["seeds"]:
            z, c = _z(seed, G.z_dim), _c(seed, G.c_dim)
            ws = G.mapping(z, c)
            np.testing.assert_allclose(ws.numpy(), expected[f"ws_seed{seed}"], atol=ATOL, rtol=0)
            for psi in meta["psis"]:
                img = G(z, c, psi=psi, noise_mode=meta["noise_mode"], force_fp32=True)
                np.testing.assert_allclose(
                    img.numpy(),
                    expected[f"seed{seed}_psi{psi}"],
                    atol=ATOL,
                    rtol=0,
                    err_msg=f"seed {seed} psi {psi}",
                )


@pytest.mark.parametrize("meta_path", SG3_FIXTURES, ids=lambda p: p.parent.name)
def test_style_mix_matches_the_official_outputs(meta_path: Path) -> None:
    G, meta = _load(meta_path.parent)
    mix = meta["mix"]
    if mix is None:
        pytest.skip("this fixture has no style-mix outputs")
    expected = np.load(meta_path.parent / "expected.npz")
    with torch.no_grad():

        def truncated_ws(seed: int) -> torch.Tensor:
            return G.mapping(_z(seed, G.z_dim), _c(seed, G.c_dim), psi=mix["psi"])  # [1, num_ws, w_dim]

        for row in mix["rows"]:
            for col in mix["cols"]:
                ws = truncated_ws(row).clone()
                ws[:, mix["styles"]] = truncated_ws(col)[:, mix["styles"]]
                img = G.synthesis(ws, noise_mode=meta["noise_mode"], force_fp32=True)
                np.testing.assert_allclose(
                    img.numpy(), expected[f"mix_{row}_{col}"], atol=ATOL, rtol=0, err_msg=f"mix {row}-{col}"
                )
