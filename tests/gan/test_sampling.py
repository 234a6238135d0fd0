"""Sampling semantics: seeds, z, labels, uint8 conversion, and the Sampler on a tiny generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gan.config import GeneratorConfig, MappingConfig, StyleGAN2SynthesisConfig, StyleGAN3SynthesisConfig
from gan.errors import GanError
from gan.sampling import (
    Sampler,
    class_to_c,
    parse_seeds,
    parse_vec2,
    seed_to_z,
    to_uint8,
)

# ------------------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0-3,42", [0, 1, 2, 3, 42]), ("7", [7]), ("5-5", [5]), (" 1 , 3-4", [1, 3, 4]), ("2,1,2", [2, 1, 2])],
)
def test_parse_seeds(text: str, expected: list[int]) -> None:
    assert parse_seeds(text) == expected


@pytest.mark.parametrize("text", ["", "a", "1,,2", "3-1", "-1", "1.5", "1-2-3", "4294967296", "0x10"])
def test_parse_seeds_refuses(text: str) -> None:
    with pytest.raises(GanError):
        parse_seeds(text)


def test_parse_vec2() -> None:
    assert parse_vec2("0.3,-1") == (0.3, -1.0)
    for bad in ("1", "1,2,3", "a,b", "nan,0", ""):
        with pytest.raises(GanError):
            parse_vec2(bad)


# ------------------------------------------------------------------------------------------------------
# z, c, uint8


@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 - 1])
def test_seed_to_z_is_randomstate(seed: int) -> None:
    z = seed_to_z(seed, 37)
    assert z.shape == (1, 37) and z.dtype == np.float64
    np.testing.assert_array_equal(z, np.random.RandomState(seed).randn(1, 37))


def test_seed_to_z_refuses_out_of_range() -> None:
    for seed in (-1, 2**32):
        with pytest.raises(GanError):
            seed_to_z(seed, 4)


def test_class_to_c() -> None:
    c = class_to_c(2, 4)
    np.testing.assert_array_equal(c, [[0, 0, 1, 0]])
    assert class_to_c(None, 0).shape == (1, 0)
    with pytest.raises(GanError, match="unconditional"):
        class_to_c(0, 0)
    with pytest.raises(GanError, match="conditional"):
        class_to_c(None, 4)
    for bad in (4, -1):
        with pytest.raises(GanError, match="out of range"):
            class_to_c(bad, 4)


def test_to_uint8_matches_official_formula() -> None:
    x = torch.linspace(-1.2, 1.2, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    got = to_uint8(x)
    assert got.shape == (2, 4, 5, 3) and got.dtype == np.uint8
    ref = np.clip(x.permute(0, 2, 3, 1).numpy() * 127.5 + 128, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(got, ref)
    assert got.min() == 0 and got.max() == 255  # clamped, not wrapped


# ------------------------------------------------------------------------------------------------------
# Sampler on tiny random generators


def _tiny_sg2(c_dim: int = 0) -> torch.nn.Module:
    from gan.generator import Generator

    torch.manual_seed(0)
    config = GeneratorConfig(
        z_dim=16,
        w_dim=16,
        c_dim=c_dim,
        img_resolution=16,
        mapping=MappingConfig(num_layers=2),
        synthesis=StyleGAN2SynthesisConfig(channel_base=128, channel_max=16),
    )
    G = Generator(config)
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn_like(G.mapping.w_avg))  # away from 0: truncation moves w
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):  # 0 at init: the noise inputs would do nothing
                p.fill_(0.5)
    return G


def _tiny_sg3() -> torch.nn.Module:
    from gan.generator import Generator

    torch.manual_seed(0)
    config = GeneratorConfig(
        architecture="stylegan3-t",
        z_dim=16,
        w_dim=16,
        img_resolution=16,
        mapping=MappingConfig(num_layers=2),
        synthesis=StyleGAN3SynthesisConfig(channel_base=256, channel_max=16, num_layers=4, num_fp16_res=0),
    )
    return Generator(config)


@pytest.fixture(scope="module")
def sg2() -> Sampler:
    return Sampler(_tiny_sg2())


@pytest.fixture(scope="module")
def sg3() -> Sampler:
    return Sampler(_tiny_sg3())


def test_ws_use_the_seed_z(sg2: Sampler) -> None:
    ws = sg2.ws_for_seeds([3, 5])
    z = torch.from_numpy(np.concatenate([seed_to_z(3, 16), seed_to_z(5, 16)])).float()
    with torch.no_grad():
        ref = sg2.G.mapping(z, torch.zeros(2, 0), psi=1.0)
    torch.testing.assert_close(ws, ref, rtol=0, atol=0)


def test_truncation(sg2: Sampler) -> None:
    seeds = [0, 1, 2]
    w1 = sg2.ws_for_seeds(seeds, psi=1.0)
    w0 = sg2.ws_for_seeds(seeds, psi=0.0)
    w_avg = sg2.G.mapping.w_avg
    torch.testing.assert_close(w0, w_avg.expand_as(w0))  # psi 0: everything at the average
    half = sg2.ws_for_seeds(seeds, psi=0.5)
    torch.testing.assert_close(half, w_avg + (w1 - w_avg) * 0.5, rtol=0, atol=1e-6)
    cut = sg2.ws_for_seeds(seeds, psi=0.5, cutoff=2)
    torch.testing.assert_close(cut[:, :2], half[:, :2])
    torch.testing.assert_close(cut[:, 2:], w1[:, 2:])  # beyond the cutoff: untouched
    with pytest.raises(GanError):
        sg2.ws_for_seeds(seeds, cutoff=sg2.num_ws + 1)


def test_batched_equals_one_by_one(sg2: Sampler) -> None:
    seeds = [0, 1, 42, 1234, 7]
    batched = sg2.render(seeds, psi=0.7, batch_size=5)
    single = torch.cat([sg2.render([s], psi=0.7, batch_size=1) for s in seeds])
    # Rows do not interact; only the float summation order inside batched kernels may differ.
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)
    u8 = np.abs(sg2.images(seeds, batch_size=5).astype(int) - sg2.images(seeds, batch_size=2).astype(int))
    assert u8.max() <= 1


def test_images_are_deterministic_and_seed_dependent(sg2: Sampler) -> None:
    a = sg2.images([0, 1])
    np.testing.assert_array_equal(a, sg2.images([0, 1]))
    assert a.shape == (2, 16, 16, 3) and a.dtype == np.uint8
    assert np.abs(a[0].astype(int) - a[1].astype(int)).mean() > 1


def test_random_noise_is_reproducible_per_seed(sg2: Sampler) -> None:
    const = sg2.render([3])
    r1 = sg2.render([3, 4], noise_mode="random", batch_size=2)
    r2 = sg2.render([9, 3], noise_mode="random", batch_size=1)
    torch.testing.assert_close(r1[0], r2[1], rtol=0, atol=1e-5)
    assert (r1[0] - const[0]).abs().max() > 1e-3  # random noise did change the image
    state = torch.get_rng_state()
    sg2.render([5], noise_mode="random")
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is left as it was


def test_noise_none_differs_from_const(sg2: Sampler) -> None:
    assert (sg2.render([1], noise_mode="none") - sg2.render([1])).abs().max() > 1e-4
    with pytest.raises(GanError):
        sg2.render([1], noise_mode="fancy")  # type: ignore[arg-type]


def test_class_errors() -> None:
    cond = Sampler(_tiny_sg2(c_dim=3))
    assert cond.images([0], class_idx=2).shape == (1, 16, 16, 3)
    with pytest.raises(GanError):
        cond.images([0])
    with pytest.raises(GanError):
        cond.images([0], class_idx=3)
    a, b = cond.render([0], class_idx=0), cond.render([0], class_idx=1)
    assert (a - b).abs().max() > 1e-4  # the label reaches the mapping
    uncond = Sampler(_tiny_sg2())
    with pytest.raises(GanError):
        uncond.images([0], class_idx=0)


def test_translate_rotate_only_for_stylegan3(sg2: Sampler, sg3: Sampler) -> None:
    with pytest.raises(GanError, match="StyleGAN3"):
        sg2.images([0], translate=(0.1, 0.0))
    with pytest.raises(GanError, match="StyleGAN3"):
        sg2.images([0], rotate=10.0)
    base = sg3.render([0])
    torch.testing.assert_close(sg3.render([0], translate=(0.0, 0.0), rotate=0.0), base)  # identity
    moved = sg3.render([0], translate=(0.25, 0.0))
    turned = sg3.render([0], rotate=30.0)
    assert (moved - base).abs().max() > 1e-3 and (turned - base).abs().max() > 1e-3


def test_images_from_ws_renders_given_ws(sg2: Sampler) -> None:
    ws = sg2.ws_for_seeds([4, 8], psi=0.6)
    np.testing.assert_array_equal(sg2.images_from_ws(ws), sg2.images([4, 8], psi=0.6))
    with pytest.raises(GanError):
        sg2.images_from_ws(ws[:, :-1])
