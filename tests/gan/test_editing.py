"""Semantic editing (gan/editing.py): SeFa and GANSpace directions, and edits along them.

SeFa is checked against an independent computation of its definition from the raw weights of every
official fixture, read by their official names (`synthesis.b8.conv0.affine.weight`,
`synthesis.L3_36_64.affine.weight`, TensorFlow's `synthesis/8x8/Conv0_up/mod_weight`) with numpy alone:
which ws index drives which layer is worked out here from those names, not taken from our modules.
GANSpace is checked against numpy's own covariance of the same mapped ws. The edits are checked on
the demo model and the fixtures: strength 0 is the unedited image, the change grows with |strength|,
and coarse edits change the image's large-scale structure more than fine ones.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.editing import (
    Direction,
    Edit,
    apply_edits,
    edit_images,
    ganspace,
    layer_indices,
    load_directions,
    normalise_layers,
    parse_edit,
    resolve_edits,
    save_directions,
    sefa,
    sweep_strengths,
    user_direction,
)
from gan.errors import GanError
from gan.generator import Generator
from gan.io.checkpoint import load_network
from gan.io.official_pickle import load_official_networks, read_official_pickle
from gan.io.tf_pickle import load_tf_networks, read_tf_pickle
from gan.mixing import style_bands
from gan.sampling import Sampler

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "official"
FIXTURE_DIRS = sorted(p.parent for p in FIXTURES.glob("*/meta.json"))
DEMO_MODEL_FILE = (
    Path(__file__).resolve().parents[2] / "worker" / "assets" / "demo" / "cartoon-faces-64.safetensors"
)


def test_fixtures_are_present() -> None:
    assert FIXTURE_DIRS, f"no fixtures under {FIXTURES}"


def _is_tf(folder: Path) -> bool:
    return folder.name.startswith("tf_")


def load_fixture(folder: Path) -> Generator:
    pkl = folder / "network.pkl"
    nets = load_tf_networks(pkl) if _is_tf(folder) else load_official_networks(pkl)
    G = nets["G_ema"]
    assert isinstance(G, Generator)
    return G


def raw_affines(folder: Path) -> list[tuple[int, np.ndarray]]:
    """(ws index, [in_channels, w_dim]) of each modulated conv, from the pickle's official names."""
    pkl = folder / "network.pkl"
    found: list[tuple[int, np.ndarray]] = []
    if _is_tf(folder):
        from gan.io.tf_pickle import _collect

        for name, value in _collect(read_tf_pickle(pkl)[2]).items():
            m = re.fullmatch(r"synthesis/(\d+)x\d+/(Conv|Conv0_up|Conv1)/mod_weight", name)
            if m:
                k = int(math.log2(int(m.group(1)))) - 2  # block k works at 4 * 2**k px
                idx = {"Conv": 0, "Conv0_up": 2 * k - 1, "Conv1": 2 * k}[m.group(2)]
                found.append((idx, np.asarray(value, np.float64).T))  # TF dense weights are [in, out]
        return found
    state = read_official_pickle(pkl)["G_ema"].state_dict()
    layers = [re.fullmatch(r"synthesis\.L(\d+)_\d+_\d+\.affine\.weight", n) for n in state]
    last = max((int(m.group(1)) for m in layers if m), default=None)
    for name, value in state.items():
        arr = np.asarray(value.numpy() if hasattr(value, "numpy") else value, np.float64)
        if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv([01])\.affine\.weight", name)) is not None:
            k = int(math.log2(int(m.group(1)))) - 2
            found.append((2 * k - 1 + int(m.group(2)), arr))
        elif (m := re.fullmatch(r"synthesis\.L(\d+)_\d+_\d+\.affine\.weight", name)) and int(
            m.group(1)
        ) != last:
            found.append((int(m.group(1)) + 1, arr))  # ws 0 drives the input; the last layer is toRGB
    return found


def reference_sefa(affines: list[tuple[int, np.ndarray]], indices: set[int]) -> tuple[np.ndarray, np.ndarray]:
    a = np.concatenate([w for i, w in affines if i in indices])
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    values, vectors = np.linalg.eigh(a.T @ a)
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order]


@pytest.mark.parametrize("folder", FIXTURE_DIRS, ids=lambda p: p.name)
def test_sefa_matches_the_definition_on_every_fixture(folder: Path) -> None:
    G = load_fixture(folder)
    affines = raw_affines(folder)
    assert affines, "no modulated convolutions found by name"
    bands = style_bands(G.config)
    ranges = {"all": set(range(G.config.num_ws)), "0-1": {0, 1}}
    ranges |= {name: set(idx) for name, idx in bands.items() if idx and any(i in idx for i, _ in affines)}
    for layers, indices in ranges.items():
        ours = sefa(G, layers)
        values, vectors = reference_sefa(affines, indices)
        got = np.array([d.value for d in ours])
        np.testing.assert_allclose(got, values, rtol=1e-6, atol=1e-6 * values[0])
        # Directions are defined up to sign, and only where the eigenvalue is not repeated.
        gaps = np.abs(np.diff(values))
        for rank in range(min(10, len(ours))):
            separated = (rank == 0 or gaps[rank - 1] > 1e-3 * values[0]) and gaps[rank] > 1e-3 * values[0]
            if not separated:
                continue
            cos = abs(float(ours[rank].vector.astype(np.float64) @ vectors[:, rank]))
            assert cos > 1 - 1e-5, f"{folder.name} {layers} rank {rank}: |cos| = {cos}"
            assert abs(np.linalg.norm(ours[rank].vector) - 1) < 1e-5
            assert ours[rank].id == f"sefa-{layers}-{rank}"


def test_sefa_refuses_ranges_a_model_does_not_have() -> None:
    G = load_fixture(next(p for p in FIXTURE_DIRS if p.name == "sg2ada_uncond_32"))
    with pytest.raises(GanError, match="holds no ws"):
        sefa(G, "fine")  # 32 px: no 64 px layers
    with pytest.raises(GanError, match="out of range"):
        sefa(G, "3-40")
    with pytest.raises(GanError, match="invalid layer range"):
        sefa(G, "coarse,fine")
    with pytest.raises(GanError, match="k must be"):
        sefa(G, "all", k=0)


def test_sefa_leaves_out_the_stylegan3_input_and_torgb() -> None:
    G = load_fixture(next(p for p in FIXTURE_DIRS if p.name.startswith("sg3")))
    last = G.config.num_ws - 1  # toRGB
    with pytest.raises(GanError, match="no convolution layer"):
        sefa(G, str(last))
    with pytest.raises(GanError, match="no convolution layer"):
        sefa(G, "0")  # the Fourier input


@pytest.mark.parametrize("folder", FIXTURE_DIRS, ids=lambda p: p.name)
def test_ganspace_is_the_pca_of_mapped_w(folder: Path) -> None:
    G = load_fixture(folder)
    calls: list[tuple[int, int]] = []
    result = ganspace(
        G, samples=3000, k=5, seed=7, batch_size=1000, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(1000, 3000), (2000, 3000), (3000, 3000)]
    # Independently: the same z and labels, one forward pass, numpy's covariance.
    rng = np.random.RandomState(7)
    zs, cs = [], []
    for _ in range(3):
        zs.append(rng.randn(1000, G.z_dim))
        c = np.zeros((1000, G.c_dim), np.float32)
        if G.c_dim:
            c[np.arange(1000), rng.randint(G.c_dim, size=1000)] = 1
        cs.append(c)
    with torch.no_grad():
        w = G.mapping(torch.from_numpy(np.concatenate(zs)).float(), torch.from_numpy(np.concatenate(cs)))[
            :, 0
        ]
    w = w.double().numpy()
    values, vectors = np.linalg.eigh(np.cov(w, rowvar=False))
    order = np.argsort(values)[::-1]
    np.testing.assert_allclose(result.mean, w.mean(0), atol=1e-4)
    for rank, d in enumerate(result.directions):
        assert d.sigma is not None and d.value is not None
        assert d.sigma == pytest.approx(math.sqrt(values[order[rank]]), rel=1e-4)
        assert d.value == pytest.approx(values[order[rank]] / values.sum(), rel=1e-4)
        assert abs(float(d.vector @ vectors[:, order[rank]])) > 1 - 1e-4
    sigmas = [d.sigma for d in result.directions]
    assert sigmas == sorted(sigmas, reverse=True)


@pytest.fixture(scope="module")
def demo() -> Sampler:
    return Sampler(load_network(DEMO_MODEL_FILE, "cpu"))


def _distances(sampler: Sampler, direction: Direction, strengths: list[float]) -> np.ndarray:
    imgs = edit_images(sampler, [0, 1], direction, strengths, psi=0.7)  # [S, K, C, H, W]
    return (imgs - imgs[:, :1]).pow(2).mean(dim=(2, 3, 4)).sqrt().mean(0).numpy()


def test_strength_zero_is_exactly_the_unedited_image(demo: Sampler) -> None:
    direction = sefa(demo.G, "coarse", 1)[0]
    plain = demo.render([5, 6], psi=0.7)
    edited = edit_images(demo, [5, 6], direction, [0.0], psi=0.7)[:, 0]
    assert torch.equal(plain, edited)


@pytest.mark.parametrize("layers", ["coarse", "middle", "fine", "all"])
def test_the_change_grows_with_strength_on_the_demo_model(demo: Sampler, layers: str) -> None:
    for direction in sefa(demo.G, layers, 3):
        d = _distances(demo, direction, [0.0, 1.0, 2.0, 4.0, -1.0, -2.0, -4.0])
        assert d[0] == 0
        assert (np.diff(d[:4]) > 0).all() and (np.diff(np.r_[0, d[4:]]) > 0).all(), (direction.id, d)


@pytest.mark.parametrize("folder", FIXTURE_DIRS, ids=lambda p: p.name)
def test_the_change_grows_with_strength_on_every_fixture(folder: Path) -> None:
    G = load_fixture(folder)
    sampler = Sampler(G)
    direction = sefa(G, "all", 1)[0]
    cls = 0 if G.c_dim else None
    imgs = edit_images(
        sampler, [0, 1], direction, [0.0, 0.5, 1.0, 2.0, -0.5, -1.0, -2.0], psi=0.7, class_idx=cls
    )
    d = (imgs - imgs[:, :1]).pow(2).mean(dim=(2, 3, 4)).sqrt().mean(0).numpy()
    assert d[0] == 0
    assert (np.diff(d[:4]) > 0).all() and (np.diff(np.r_[0, d[4:]]) > 0).all(), d


def _structural_low_frequency_change(base: torch.Tensor, edited: torch.Tensor, factor: int) -> float:
    """RMS of the edit's change at 1/factor resolution, after removing what a per-channel colour change
    (gain and offset, fitted by least squares) explains: how much the large-scale structure moved."""
    b, e = base.flatten(2).double(), edited.flatten(2).double()
    bm, em = b.mean(-1, keepdim=True), e.mean(-1, keepdim=True)
    gain = ((b - bm) * (e - em)).sum(-1, keepdim=True) / ((b - bm) ** 2).sum(-1, keepdim=True).clamp_min(
        1e-12
    )
    residual = (e - (gain * (b - bm) + em)).reshape(base.shape)
    return float(torch.nn.functional.avg_pool2d(residual, factor).pow(2).mean().sqrt())


@pytest.mark.parametrize("folder", [p for p in FIXTURE_DIRS if "cond4" not in p.name], ids=lambda p: p.name)
def test_coarse_edits_move_large_scale_structure_more_than_fine_ones(folder: Path) -> None:
    G = load_fixture(folder)
    sampler = Sampler(G)
    bands = style_bands(G.config)
    finest = "fine" if bands["fine"] else "middle"
    change = {}
    for layers in ("coarse", finest):
        values = []
        for direction in sefa(G, layers, 2):
            imgs = edit_images(sampler, list(range(4)), direction, [0.0, 3.0], psi=0.7)
            values.append(
                _structural_low_frequency_change(imgs[:, 0], imgs[:, 1], G.config.img_resolution // 8)
            )
        change[layers] = float(np.mean(values))
    print(
        f"{folder.name}: structural change at 1/8 resolution, coarse {change['coarse']:.4f}, {finest} {change[finest]:.4f}"
    )
    assert change["coarse"] > change[finest]


def test_an_edit_touches_only_its_layer_range() -> None:
    G = load_fixture(next(p for p in FIXTURE_DIRS if p.name == "sg2ada_uncond_32"))
    ws = torch.randn(2, G.config.num_ws, G.config.w_dim)
    direction = sefa(G, "middle", 1)[0]
    out = apply_edits(ws, [Edit(direction, 2.0)], G.config)
    changed = sorted({int(i) for i in torch.nonzero((out != ws).any(-1).any(0)).flatten()})
    assert changed == layer_indices("middle", G.config)
    override = apply_edits(ws, [Edit(direction, 2.0, "0-1")], G.config)
    assert torch.equal(override[:, 2:], ws[:, 2:]) and not torch.equal(override[:, :2], ws[:, :2])
    assert torch.allclose(out[:, 4] - ws[:, 4], torch.from_numpy(2.0 * direction.vector), atol=1e-6)


def test_ganspace_strength_is_in_sigmas() -> None:
    G = load_fixture(next(p for p in FIXTURE_DIRS if p.name == "sg2ada_uncond_32"))
    d = ganspace(G, samples=500, k=2).directions[0]
    ws = torch.zeros(1, G.config.num_ws, G.config.w_dim)
    out = apply_edits(ws, [Edit(d, 1.5)], G.config)
    assert d.sigma is not None
    assert float(out[0, 0].norm()) == pytest.approx(1.5 * d.sigma, rel=1e-5)


def test_edit_specs_parse_and_refuse() -> None:
    spec = parse_edit("sefa-coarse-0:2.5")
    assert (spec.id, spec.strength, spec.layers) == ("sefa-coarse-0", 2.5, None)
    assert parse_edit("smile:-1e0@Coarse").layers == "coarse"
    assert parse_edit("sefa-0-3-1:1@2-2").layers == "2"
    for bad in ("sefa-coarse-0", "x:nan", "x:inf", "x:1e309", "x:abc", "x:1@fine,coarse", ":1", "x:1@5-2"):
        with pytest.raises(GanError):
            parse_edit(bad)
    known = {"a": user_direction("a", [1.0, 0.0], 2)}
    with pytest.raises(GanError, match="unknown direction 'b'"):
        resolve_edits([parse_edit("b:1")], known)
    with pytest.raises(GanError, match="at most 8"):
        resolve_edits([parse_edit("a:1")] * 9, known)
    assert normalise_layers(" ALL ") == "all"


def test_user_directions_are_checked() -> None:
    assert user_direction("smile", [0.0, 2.0], 2).vector.tolist() == [0.0, 2.0]
    with pytest.raises(GanError, match="has 3 numbers"):
        user_direction("smile", [1.0, 2.0, 3.0], 2)
    with pytest.raises(GanError, match="non-finite"):
        user_direction("smile", [1.0, float("nan")], 2)
    with pytest.raises(GanError, match="all zeros"):
        user_direction("smile", [0.0, 0.0], 2)
    for bad in ("Smile", "sefa-coarse-0", "", "a" * 49, "x y", "é"):
        with pytest.raises(GanError, match="invalid direction name"):
            user_direction(bad, [1.0, 0.0], 2)


def test_directions_files_round_trip(tmp_path: Path) -> None:
    G = load_fixture(next(p for p in FIXTURE_DIRS if p.name == "sg2ada_uncond_32"))
    found = sefa(G, "coarse", 3) + ganspace(G, samples=300, k=2).directions
    save_directions(tmp_path / "dirs.npz", found)
    loaded = load_directions(tmp_path / "dirs.npz")
    assert list(loaded) == [d.id for d in found]
    for d in found:
        got = loaded[d.id]
        assert (got.method, got.layers, got.rank, got.value, got.sigma) == (
            d.method,
            d.layers,
            d.rank,
            d.value,
            d.sigma,
        )
        assert np.array_equal(got.vector, d.vector)
    np.save(tmp_path / "smile.npy", np.ones(G.config.w_dim, np.float32))
    assert loaded_user(tmp_path / "smile.npy").method == "user"
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(GanError, match="not a directions file"):
        load_directions(tmp_path / "junk.npz")


def loaded_user(path: Path) -> Direction:
    return load_directions(path)[path.stem]


def test_sweep_strengths() -> None:
    assert sweep_strengths(-2, 2, 5) == [-2.0, -1.0, 0.0, 1.0, 2.0]
    looped = sweep_strengths(-2, 2, 8, loop=True)
    assert len(looped) == 8 and looped[0] == -2 and max(looped) == 2
    with pytest.raises(GanError):
        sweep_strengths(0, float("inf"), 3)
