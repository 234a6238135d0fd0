"""Old TensorFlow StyleGAN2 pickles: records, the config from static_kwargs, parity with legacy.py."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.errors import ConfigError, FormatError
from gan.io.safe_pickle import TFNetworkRecord
from gan.io.tf_pickle import generator_config_from_tf, load_tf_networks, networks_from_tf, read_tf_pickle

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "official"
TF_FIXTURES = sorted(
    p
    for p in FIXTURES.glob("*/network.pkl")
    if json.loads((p.parent / "meta.json").read_text()).get("tf_pickle")
)
ids = [p.parent.name for p in TF_FIXTURES]


def _meta(pkl: Path) -> dict:
    return json.loads((pkl.parent / "meta.json").read_text())


def test_tf_fixture_exists() -> None:
    assert TF_FIXTURES


@pytest.mark.parametrize("pkl", TF_FIXTURES, ids=ids)
def test_records_hold_the_tf_state(pkl: Path) -> None:
    meta = _meta(pkl)
    G, D, Gs = read_tf_pickle(pkl)
    assert [n.name for n in (G, D, Gs)] == ["G", "D", "Gs"]
    for net, key in ((G, "G"), (D, "D"), (Gs, "Gs")):
        assert net.state["static_kwargs"] == meta["static_kwargs"][key]
        assert net.state["version"] == meta["tf_pickle"]["network_state_version"]
    assert set(Gs.state["components"]) == {"mapping", "synthesis"}
    assert Gs.state["build_func_name"] == meta["tf_pickle"]["build_func_names"]["G"]


@pytest.mark.parametrize("pkl", TF_FIXTURES, ids=ids)
def test_config_matches_what_legacy_py_derived(pkl: Path) -> None:
    kw = _meta(pkl)["init_kwargs"]
    config = generator_config_from_tf(read_tf_pickle(pkl)[2]).to_dict()
    for key in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"):
        assert config[key] == kw[key]
    assert config["mapping"] == kw["mapping_kwargs"]
    assert {k: config["synthesis"][k] for k in kw["synthesis_kwargs"]} == kw["synthesis_kwargs"]


@pytest.mark.parametrize("pkl", TF_FIXTURES, ids=ids)
def test_gs_reproduces_the_official_outputs(pkl: Path) -> None:
    meta = _meta(pkl)
    expected = np.load(pkl.parent / "expected.npz")
    G = load_tf_networks(pkl)["G_ema"]
    for seed in meta["seeds"]:
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
        with torch.no_grad():
            ws = G.mapping(z, None, psi=1.0)
            img = G(z, None, psi=1.0, noise_mode=meta["noise_mode"], force_fp32=True)
        # 1e-5: float32 on CPU, differences come from summation order only (measured ~3e-6)
        np.testing.assert_allclose(ws.numpy(), expected[f"ws_seed{seed}"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(img.numpy(), expected[f"seed{seed}_psi1.0"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("pkl", TF_FIXTURES, ids=ids)
def test_tf_layout_is_converted_exactly(pkl: Path) -> None:
    G_tf, D_tf, Gs = read_tf_pickle(pkl)
    nets = load_tf_networks(pkl, which=("G_ema", "G", "D"))
    syn = dict(Gs.state["components"]["synthesis"].state["variables"])
    sd = nets["G_ema"].state_dict()
    w = syn["4x4/Conv/weight"]  # [kh, kw, in, out]
    assert torch.equal(sd["synthesis.b4.conv1.weight"], torch.from_numpy(w.transpose(3, 2, 0, 1).copy()))
    up = syn["8x8/Conv0_up/weight"]  # transposed conv in TF: flipped in space
    assert torch.equal(sd["synthesis.b8.conv0.weight"][:, :, 0, 0], torch.from_numpy(up[2, 2].T.copy()))
    assert torch.equal(sd["synthesis.b4.conv1.affine.bias"], torch.from_numpy(syn["4x4/Conv/mod_bias"] + 1))
    assert torch.equal(sd["mapping.w_avg"], torch.from_numpy(dict(Gs.state["variables"])["dlatent_avg"]))
    # G (trained weights) and Gs (their average) are different tensors
    g = nets["G"].state_dict()
    assert not torch.equal(g["synthesis.b4.conv1.weight"], sd["synthesis.b4.conv1.weight"])
    d_vars = dict(D_tf.state["variables"])
    assert torch.equal(
        nets["D"].state_dict()["b4.out.weight"], torch.from_numpy(d_vars["Output/weight"].T.copy())
    )


@pytest.mark.parametrize("pkl", TF_FIXTURES, ids=ids)
def test_unmapped_variable_is_an_error(pkl: Path) -> None:
    nets = read_tf_pickle(pkl)
    nets[2].state["variables"].append(("mystery_var", np.zeros(3, np.float32)))
    with pytest.raises(FormatError, match="mystery_var"):
        networks_from_tf(nets)


@pytest.mark.parametrize("pkl", TF_FIXTURES, ids=ids)
def test_missing_variable_is_an_error(pkl: Path) -> None:
    nets = read_tf_pickle(pkl)
    mapping = nets[2].state["components"]["mapping"].state
    mapping["variables"] = [v for v in mapping["variables"] if v[0] != "Dense0/weight"]
    with pytest.raises(FormatError, match="Dense0/weight"):
        networks_from_tf(nets)


@pytest.mark.parametrize("pkl", TF_FIXTURES, ids=ids)
def test_unknown_static_kwarg_is_an_error(pkl: Path) -> None:
    nets = read_tf_pickle(pkl)
    nets[2].state["static_kwargs"]["mystery_kwarg"] = 1
    with pytest.raises(ConfigError, match="mystery_kwarg"):
        networks_from_tf(nets)


def test_pytorch_pickle_is_not_a_tf_pickle(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"G_ema": 1}, 4))
    with pytest.raises(FormatError, match="tuple"):
        read_tf_pickle(path)


def test_old_state_version_is_refused() -> None:
    net = TFNetworkRecord()
    net.__setstate__({"version": 3, "name": "Gs", "static_kwargs": {}, "components": {}, "variables": []})
    with pytest.raises(FormatError, match="version 3"):
        networks_from_tf((net, net, net))
