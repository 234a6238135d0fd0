"""Official pickles -> our modules: configs from init_kwargs, a bitwise weight copy, mapping parity."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.config import GeneratorConfig
from gan.errors import ConfigError, FormatError
from gan.generator import build_generator
from gan.io.official_pickle import (
    _SkeletonDevice,
    copy_state,
    discriminator_config_from_official,
    generator_config_from_official,
    load_official_networks,
    networks_from_official,
    read_official_pickle,
)
from gan.io.safe_pickle import safe_loads
from gan.stylegan2.discriminator import Discriminator

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "official"
PYTORCH_FIXTURES = sorted(
    p
    for p in FIXTURES.glob("*/network.pkl")
    if not json.loads((p.parent / "meta.json").read_text()).get("tf_pickle")
)
ids = [p.parent.name for p in PYTORCH_FIXTURES]


def _meta(pkl: Path) -> dict:
    return json.loads((pkl.parent / "meta.json").read_text())


@pytest.mark.parametrize("pkl", PYTORCH_FIXTURES, ids=ids)
def test_config_follows_init_kwargs(pkl: Path) -> None:
    kw = _meta(pkl)["init_kwargs"]
    config = generator_config_from_official(read_official_pickle(pkl)["G_ema"])
    assert GeneratorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for key in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"):
        assert getattr(config, key) == kw[key]
    assert config.mapping.num_layers == kw["mapping_kwargs"]["num_layers"]
    if "synthesis_kwargs" in kw:
        assert config.architecture == "stylegan2"
        for key, value in kw["synthesis_kwargs"].items():
            assert getattr(config.synthesis, key) == value
    else:
        assert config.architecture == ("stylegan3-r" if kw["use_radial_filters"] else "stylegan3-t")
        for key in ("channel_base", "channel_max", "conv_kernel", "magnitude_ema_beta", "conv_clamp"):
            assert getattr(config.synthesis, key) == kw[key]


@pytest.mark.parametrize("pkl", PYTORCH_FIXTURES, ids=ids)
def test_weights_are_copied_bit_for_bit(pkl: Path) -> None:
    data = read_official_pickle(pkl)
    nets = load_official_networks(pkl, which=("G_ema", "G", "D"))
    for name in ("G_ema", "G", "D"):
        theirs = data[name].state_dict()
        ours = nets[name].state_dict()
        assert set(ours) == set(theirs)
        for key, value in theirs.items():
            assert ours[key].dtype == value.dtype, key
            assert torch.equal(ours[key], value), key
    # G and G_ema are different networks in every fixture (the EMA lags the trained weights)
    g, g_ema = nets["G"].state_dict(), nets["G_ema"].state_dict()
    assert any(not torch.equal(g[k], g_ema[k]) for k in g)


@pytest.mark.parametrize("pkl", PYTORCH_FIXTURES, ids=ids)
def test_mapping_reproduces_the_official_ws(pkl: Path) -> None:
    meta = _meta(pkl)
    expected = np.load(pkl.parent / "expected.npz")
    G = load_official_networks(pkl)["G_ema"]
    for seed in meta["seeds"]:
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
        c = torch.zeros(1, G.c_dim)
        if G.c_dim:
            c[0, seed % G.c_dim] = 1
        with torch.no_grad():
            ws = G.mapping(z, c if G.c_dim else None, psi=1.0)
        # float32 on CPU through a few small matmuls: 1e-5 leaves room for summation order only
        np.testing.assert_allclose(ws.numpy(), expected[f"ws_seed{seed}"], atol=1e-5, rtol=0)


def test_discriminator_runs_on_a_generated_image() -> None:
    pkl = PYTORCH_FIXTURES[0]
    nets = load_official_networks(pkl, which=("G_ema", "D"))
    G, D = nets["G_ema"], nets["D"]
    z = torch.randn(2, G.z_dim)
    c = torch.eye(G.c_dim)[:2] if G.c_dim else None
    with torch.no_grad():
        logits = D(G(z, c, force_fp32=True), c)
    assert logits.shape == (2, 1) and torch.isfinite(logits).all()


def test_unknown_network_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="which"):
        load_official_networks(PYTORCH_FIXTURES[0], which=("augment_pipe",))


def test_mismatched_weights_are_listed() -> None:
    G = load_official_networks(PYTORCH_FIXTURES[0])["G_ema"]
    state = dict(G.state_dict())
    state.pop("mapping.fc0.weight")
    state["mapping.extra"] = torch.zeros(1)
    with pytest.raises(FormatError, match=r"missing mapping\.fc0\.weight; unexpected mapping\.extra"):
        copy_state(G, state, "G_ema")
    state = dict(G.state_dict())
    state["mapping.fc0.weight"] = torch.zeros(3, 3)
    with pytest.raises(FormatError, match=r"mapping\.fc0\.weight has shape \[3, 3\]"):
        copy_state(G, state, "G_ema")


def test_unknown_official_argument_is_refused() -> None:
    record = read_official_pickle(PYTORCH_FIXTURES[0])["G_ema"]
    record.init_kwargs = dict(record.init_kwargs, mystery_knob=3)
    with pytest.raises(ConfigError, match="mystery_knob"):
        generator_config_from_official(record)


def test_stylegan3_repos_flat_stylegan2_arguments_are_read() -> None:
    """stylegan3's train.py --cfg stylegan2 passes the synthesis arguments to its StyleGAN2 Generator
    flat (no synthesis_kwargs), with fused_modconv_default: the same network as the nested spelling."""
    sg2 = [p for p in PYTORCH_FIXTURES if not _meta(p)["name"].startswith("sg3")]
    record = read_official_pickle(sg2[0])["G_ema"]
    nested = generator_config_from_official(record)
    kw = dict(record.init_kwargs)
    synthesis = kw.pop("synthesis_kwargs")
    record.init_kwargs = {**kw, **synthesis, "fused_modconv_default": "inference_only"}
    assert generator_config_from_official(record) == nested
    record.init_kwargs = {**record.init_kwargs, "synthesis_kwargs": {"channel_base": 1024}}
    with pytest.raises(FormatError, match="both flat and in synthesis_kwargs"):
        generator_config_from_official(record)


def _shapes(module: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("pkl", PYTORCH_FIXTURES, ids=ids)
def test_skeleton_build_matches_torch_meta(pkl: Path) -> None:
    """The load's shapes-only build makes some meta results itself (gan.io.official_pickle
    `_SkeletonDevice`): it must give exactly torch.device("meta")'s tensors."""
    data = read_official_pickle(pkl)
    builds = [
        lambda: build_generator(generator_config_from_official(data["G_ema"])),
        lambda: Discriminator(discriminator_config_from_official(data["D"])),
    ]
    for build in builds:
        with torch.device("meta"):
            reference = build()
        with _SkeletonDevice():
            skeleton = build()
        assert _shapes(skeleton) == _shapes(reference)
        meta = {k: t.is_meta for k, t in skeleton.state_dict().items()}
        assert meta == {k: t.is_meta for k, t in reference.state_dict().items()}
        assert sum(meta.values()) >= len(meta) // 2  # the weights; filters from numpy stay real


def test_skeleton_of_a_1024px_stylegan2_matches_torch_meta() -> None:
    config = GeneratorConfig(architecture="stylegan2", img_resolution=1024)
    with torch.device("meta"):
        reference = build_generator(config)
    with _SkeletonDevice():
        skeleton = build_generator(config)
    assert _shapes(skeleton) == _shapes(reference)


def test_loaded_networks_own_their_weights() -> None:
    """The file's tensors go into the modules without a copy into a random build; each module tensor
    still has a storage of its own, writable, apart from the other networks' and the file's records."""
    data = read_official_pickle(PYTORCH_FIXTURES[0])
    nets = networks_from_official(data, ("G_ema", "G", "D"))
    ptrs = [t.untyped_storage().data_ptr() for net in nets.values() for t in net.state_dict().values()]
    assert len(set(ptrs)) == len(ptrs)
    weight = nets["G_ema"].mapping.fc0.weight
    before = data["G_ema"].children["mapping"].children["fc0"].parameters["weight"].clone()
    with torch.no_grad():
        weight.add_(1)
    assert torch.equal(data["G_ema"].children["mapping"].children["fc0"].parameters["weight"], before)
    assert weight.requires_grad and isinstance(weight, torch.nn.Parameter)


def test_loading_imports_neither_dynamo_nor_sympy() -> None:
    """torch's Python meta kernels import torch._dynamo and sympy on first use: 1.6 s of a cold
    1024 px load on a 2-core CPU, which the shapes-only build avoids for every fixture."""
    code = (
        "import sys; from gan.io.official_pickle import load_official_networks\n"
        f"for p in {[str(p) for p in PYTORCH_FIXTURES]!r}:\n"
        "    load_official_networks(p, ('G_ema', 'G', 'D'))\n"
        "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_reading_leaves_no_reference_to_the_file_bytes() -> None:
    """The unpickler's allowlist of bound methods is a reference cycle; left in place it kept the whole
    file and the unpickler's memo alive until the cyclic GC ran (380 MB at 1024 px)."""
    data = PYTORCH_FIXTURES[0].read_bytes()
    gc.disable()
    try:
        before = sys.getrefcount(data)
        safe_loads(data)
        assert sys.getrefcount(data) == before
    finally:
        gc.enable()
