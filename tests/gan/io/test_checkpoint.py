"""Our format: bit-exact round trips from every fixture, detection by content, bounded reads."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from gan.config import GeneratorConfig, MappingConfig, StyleGAN2SynthesisConfig
from gan.errors import ConfigError, FormatError
from gan.generator import build_generator
from gan.io.checkpoint import (
    FORMAT_NAME,
    convert_network,
    inspect_network,
    load_generator,
    load_network,
    save_generator,
)
from gan.io.official_pickle import read_official_pickle
from gan.io.tf_pickle import read_tf_pickle

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "official"
ALL_FIXTURES = sorted(FIXTURES.glob("*/network.pkl"))
ids = [p.parent.name for p in ALL_FIXTURES]


def _is_tf(pkl: Path) -> bool:
    return bool(json.loads((pkl.parent / "meta.json").read_text()).get("tf_pickle"))


def _tiny() -> GeneratorConfig:
    return GeneratorConfig(
        z_dim=16,
        w_dim=16,
        img_resolution=16,
        mapping=MappingConfig(num_layers=2),
        synthesis=StyleGAN2SynthesisConfig(channel_base=64, channel_max=16),
    )


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("pkl", ALL_FIXTURES, ids=ids)
def test_pickle_to_ours_round_trips_bit_exactly(pkl: Path, tmp_path: Path) -> None:
    G = load_network(pkl)
    # the weights we hold are the file's own, bit for bit
    if _is_tf(pkl):
        assert G.config.architecture == "stylegan2"
        w_avg = dict(read_tf_pickle(pkl)[2].state["variables"])["dlatent_avg"]
        assert torch.equal(G.state_dict()["mapping.w_avg"], torch.from_numpy(w_avg))
    else:
        theirs = read_official_pickle(pkl)["G_ema"].state_dict()
        _assert_same_state(G.state_dict(), {k: theirs[k] for k in G.state_dict()})
    out = convert_network(pkl, tmp_path / "g.safetensors", license_note="NVIDIA Source Code License")
    again = load_generator(out)
    assert again.config == G.config
    _assert_same_state(G.state_dict(), again.state_dict())
    # ours -> ours keeps weights, licence and source
    out2 = convert_network(out, tmp_path / "g2.safetensors")
    _assert_same_state(G.state_dict(), load_network(out2).state_dict())
    info1, info2 = inspect_network(out), inspect_network(out2)
    assert info2.license == info1.license == "NVIDIA Source Code License"
    assert info2.source == info1.source and pkl.name in (info1.source or "")


@pytest.mark.parametrize("pkl", ALL_FIXTURES, ids=ids)
def test_inspect_reports_the_network(pkl: Path) -> None:
    import hashlib

    info = inspect_network(pkl)
    kw = json.loads((pkl.parent / "meta.json").read_text())["init_kwargs"]
    assert info.format == ("tensorflow-pickle" if _is_tf(pkl) else "official-pytorch-pickle")
    assert (info.resolution, info.z_dim, info.w_dim, info.c_dim) == (
        kw["img_resolution"],
        kw["z_dim"],
        kw["w_dim"],
        kw["c_dim"],
    )
    assert info.sha256 == hashlib.sha256(pkl.read_bytes()).hexdigest()
    G = load_network(pkl)
    assert info.num_params == sum(p.numel() for p in G.parameters())
    assert info.num_ws == G.num_ws
    assert json.loads(json.dumps(info.to_dict()))["architecture"] == info.architecture


def test_save_and_load_a_fresh_generator(tmp_path: Path) -> None:
    torch.manual_seed(0)
    G = build_generator(_tiny()).eval()
    path = save_generator(G, tmp_path / "tiny.safetensors", source="unit test")
    loaded = load_generator(path)
    _assert_same_state(G.state_dict(), loaded.state_dict())
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(G(z, None), loaded(z, None))
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_save_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    path.write_bytes(b"old")
    save_generator(build_generator(_tiny()), path)
    assert load_generator(path).config == _tiny()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors"]


def _write_safetensors(path: Path, tensors: dict, metadata: dict) -> Path:
    path.write_bytes(st_save(tensors, metadata=metadata))
    return path


def test_wrong_format_name_is_refused(tmp_path: Path) -> None:
    path = _write_safetensors(tmp_path / "x.safetensors", {"a": torch.zeros(2)}, {"format": "something-else"})
    with pytest.raises(FormatError, match="something-else"):
        load_generator(path)


def test_bad_config_is_a_config_error(tmp_path: Path) -> None:
    meta = {"format": FORMAT_NAME, "format_version": "1", "config": json.dumps({"img_resolution": 48})}
    path = _write_safetensors(tmp_path / "x.safetensors", {"a": torch.zeros(2)}, meta)
    with pytest.raises(ConfigError, match="power of two"):
        load_generator(path)


def test_missing_weights_are_listed(tmp_path: Path) -> None:
    G = build_generator(_tiny())
    state = {k: v.clone() for k, v in G.state_dict().items() if k != "mapping.fc0.weight"}
    meta = {"format": FORMAT_NAME, "format_version": "1", "config": json.dumps(_tiny().to_dict())}
    path = _write_safetensors(tmp_path / "x.safetensors", state, meta)
    with pytest.raises(FormatError, match=r"missing mapping\.fc0\.weight"):
        load_generator(path)


@pytest.mark.parametrize(
    "header",
    [
        {"a": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 4]}},
        {"a": {"dtype": "OBJECT", "shape": [1], "data_offsets": [0, 4]}},
        {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {"x": 1}},
        [1, 2, 3],
    ],
)
def test_implausible_safetensors_header(header: object, tmp_path: Path) -> None:
    raw = json.dumps(header).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x00" * 8)
    with pytest.raises(FormatError):
        load_network(path)


def test_huge_declared_header_length(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    with pytest.raises(FormatError):
        load_network(path)


def test_safetensors_data_offsets_out_of_range(tmp_path: Path) -> None:
    raw = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x00" * 4)
    with pytest.raises(FormatError):
        load_generator(path)


def test_unknown_content_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"GIF89a" + b"\x00" * 100)
    with pytest.raises(FormatError, match="not a network file"):
        load_network(path)


def test_too_many_tensors_in_safetensors(tmp_path: Path) -> None:
    from gan.io.limits import ReadLimits

    path = _write_safetensors(tmp_path / "x.safetensors", {f"t{i}": torch.zeros(1) for i in range(20)}, {})
    with pytest.raises(FormatError, match="20 tensors"):
        load_network(path, limits=ReadLimits(max_tensors=10))
