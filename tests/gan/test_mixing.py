"""Style ranges and style mixing, against the official fixtures where they carry mixes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.config import GeneratorConfig, StyleGAN3SynthesisConfig
from gan.errors import GanError
from gan.mixing import mix_grid, mix_ws, parse_styles, style_bands, style_mix, style_mix_float, ws_resolutions
from gan.sampling import Sampler, to_uint8

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "official"


def _mix_fixtures() -> list[Path]:
    found = [d for d in sorted(FIXTURES.glob("*/meta.json")) if json.loads(d.read_text()).get("mix")]
    assert found, f"no fixture with a style mix under {FIXTURES}"
    return [d.parent for d in found]


def _sg2(res: int) -> GeneratorConfig:
    return GeneratorConfig(img_resolution=res)


def _sg3(res: int, **kw: object) -> GeneratorConfig:
    return GeneratorConfig(
        architecture="stylegan3-r", img_resolution=res, synthesis=StyleGAN3SynthesisConfig(**kw)
    )


# ------------------------------------------------------------------------------------------------------
# Ranges


def test_stylegan2_1024_bands_are_the_papers() -> None:
    bands = style_bands(_sg2(1024))
    assert bands == {"coarse": [0, 1, 2, 3], "middle": [4, 5, 6, 7], "fine": list(range(8, 18))}


@pytest.mark.parametrize("res", [4, 8, 16, 32, 64, 128, 256, 512, 1024])
def test_stylegan2_bands_partition_the_ws(res: int) -> None:
    config = _sg2(res)
    bands = style_bands(config)
    flat = sorted(i for idx in bands.values() for i in idx)
    assert flat == list(range(config.num_ws))  # every ws in exactly one band
    res_of = ws_resolutions(config)
    assert res_of == sorted(res_of) and res_of[-1] == res  # resolutions climb to the image's
    assert bands["coarse"] == [i for i in range(config.num_ws) if i < 4]
    assert (len(bands["fine"]) > 0) == (res >= 64)


@pytest.mark.parametrize("res", [16, 32, 64, 256, 1024])
def test_stylegan3_bands_follow_the_cutoffs(res: int) -> None:
    config = _sg3(res)
    res_of = ws_resolutions(config)
    assert len(res_of) == config.num_ws == 16
    assert res_of == sorted(res_of)
    assert res_of[0] == 4  # first_cutoff 2 cycles -> 4 px, the coarsest content
    assert res_of[-1] == res  # the critically sampled layers and toRGB hold the full band
    bands = style_bands(config)
    assert sorted(i for idx in bands.values() for i in idx) == list(range(16))
    assert bands["coarse"] and bands["coarse"][0] == 0
    assert (len(bands["fine"]) > 0) == (res >= 64)


def test_stylegan3_band_boundaries_at_1024() -> None:
    # Cutoffs 2 * 512**(i/12): 2, 3.2, 5.0, 8, 12.7, 20.2, 32, ... -> 2 f_c rounded up to a power of two.
    assert style_bands(_sg3(1024)) == {"coarse": [0, 1, 2], "middle": [3, 4, 5], "fine": list(range(6, 16))}


def test_parse_styles() -> None:
    bands = style_bands(_sg2(1024))
    assert parse_styles("0-6", 18) == list(range(7))
    assert parse_styles("0,1,5-7", 18) == [0, 1, 5, 6, 7]
    assert parse_styles("coarse", 18, bands) == [0, 1, 2, 3]
    assert parse_styles("middle", 18, bands) == [4, 5, 6, 7]
    assert parse_styles("fine", 18, bands) == list(range(8, 18))
    assert parse_styles("coarse,9", 18, bands) == [0, 1, 2, 3, 9]


@pytest.mark.parametrize("text", ["", "x", "0-18", "18", "3-1", "-1", "coarse;fine", "0,,1"])
def test_parse_styles_refuses(text: str) -> None:
    with pytest.raises(GanError):
        parse_styles(text, 18, style_bands(_sg2(1024)))


def test_empty_band_is_an_error_naming_it() -> None:
    config = _sg2(32)
    with pytest.raises(GanError, match="fine"):
        parse_styles("fine", config.num_ws, style_bands(config))
    with pytest.raises(GanError, match="coarse"):
        parse_styles("coarse", 8)  # a name without the model's bands


def test_mix_ws_copies_only_the_chosen_rows() -> None:
    a, b = torch.zeros(6, 3), torch.ones(6, 3)
    mixed = mix_ws({1: a, 2: b}, [1], [2], [0, 4])
    expected = torch.zeros(6, 3)
    expected[[0, 4]] = 1
    assert torch.equal(mixed[(1, 2)], expected)
    assert torch.equal(a, torch.zeros(6, 3))  # the source ws are not modified


def test_mix_grid_layout() -> None:
    rows, cols = [5, 6], [7, 8, 9]
    images = {}
    for s in rows + cols:
        images[(s, s)] = np.full((2, 2, 3), s, np.uint8)
    for r in rows:
        for c in cols:
            images[(r, c)] = np.full((2, 2, 3), 10 * r + c, np.uint8)
    grid = mix_grid(images, rows, cols)
    assert grid.shape == (6, 8, 3)
    cell = grid[::2, ::2, 0]  # one pixel per cell
    np.testing.assert_array_equal(cell[0], [0, 7, 8, 9])  # blank corner, then the column seeds
    np.testing.assert_array_equal(cell[:, 0], [0, 5, 6])  # row seeds down the left
    np.testing.assert_array_equal(cell[1:, 1:], [[57, 58, 59], [67, 68, 69]])


# ------------------------------------------------------------------------------------------------------
# Official fixtures


@pytest.fixture(scope="module", params=_mix_fixtures(), ids=lambda p: p.name)
def fixture(request: pytest.FixtureRequest) -> tuple[Sampler, dict, dict[str, np.ndarray]]:
    from gan.io.checkpoint import load_network

    folder: Path = request.param
    meta = json.loads((folder / "meta.json").read_text())
    expected = dict(np.load(folder / "expected.npz"))
    sampler = Sampler(load_network(folder / "network.pkl", "cpu"), force_fp32=True)
    return sampler, meta, expected


def test_style_mix_matches_official(fixture: tuple[Sampler, dict, dict[str, np.ndarray]]) -> None:
    sampler, meta, expected = fixture
    mix = meta["mix"]
    got = style_mix_float(
        sampler, mix["rows"], mix["cols"], mix["styles"], psi=mix["psi"], noise_mode=meta["noise_mode"]
    )
    for row in mix["rows"]:
        for col in mix["cols"]:
            want = expected[f"mix_{row}_{col}"][0]
            # 1e-4: float32 on CPU, with our op order rather than NVIDIA's (the tolerance).
            np.testing.assert_allclose(got[(row, col)].numpy(), want, rtol=0, atol=1e-4)
    for seed in {*mix["rows"], *mix["cols"]}:  # the unmixed images of the grid's edges
        want = expected[f"seed{seed}_psi{float(mix['psi'])}"][0]
        np.testing.assert_allclose(got[(seed, seed)].numpy(), want, rtol=0, atol=1e-4)


def test_style_mix_uint8_and_grid(fixture: tuple[Sampler, dict, dict[str, np.ndarray]]) -> None:
    sampler, meta, expected = fixture
    mix = meta["mix"]
    images = style_mix(sampler, mix["rows"], mix["cols"], mix["styles"], psi=mix["psi"])
    for row in mix["rows"]:
        for col in mix["cols"]:
            want = to_uint8(expected[f"mix_{row}_{col}"])[0]
            # One grey level: a value within 1e-4 of a rounding boundary may land on either side.
            assert np.abs(images[(row, col)].astype(int) - want.astype(int)).max() <= 1
    grid = mix_grid(images, mix["rows"], mix["cols"])
    h = images[(mix["rows"][0], mix["cols"][0])].shape[0]
    assert grid.shape[:2] == ((len(mix["rows"]) + 1) * h, (len(mix["cols"]) + 1) * h)
    np.testing.assert_array_equal(grid[h : 2 * h, h : 2 * h], images[(mix["rows"][0], mix["cols"][0])])


def test_style_mix_refuses_bad_styles(fixture: tuple[Sampler, dict, dict[str, np.ndarray]]) -> None:
    sampler, _, _ = fixture
    with pytest.raises(GanError):
        style_mix(sampler, [0], [1], [sampler.num_ws])
    with pytest.raises(GanError):
        style_mix(sampler, [], [1], [0])
