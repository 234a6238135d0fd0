"""The raw reader on every official fixture: records, key sets and shapes as meta.json implies."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gan.errors import FormatError
from gan.io.official_pickle import PersistentRecord, read_official_pickle

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "official"
PYTORCH_FIXTURES = sorted(
    p
    for p in FIXTURES.glob("*/network.pkl")
    if not json.loads((p.parent / "meta.json").read_text()).get("tf_pickle")
)
TF_FIXTURES = sorted(
    p
    for p in FIXTURES.glob("*/network.pkl")
    if json.loads((p.parent / "meta.json").read_text()).get("tf_pickle")
)


def _meta(pkl: Path) -> dict:
    return json.loads((pkl.parent / "meta.json").read_text())


def test_fixtures_exist() -> None:
    assert PYTORCH_FIXTURES, f"no official fixtures under {FIXTURES}"


@pytest.mark.parametrize("pkl", PYTORCH_FIXTURES, ids=lambda p: p.parent.name)
def test_reads_every_network_as_records(pkl: Path) -> None:
    meta = _meta(pkl)
    data = read_official_pickle(pkl)
    for name in ("G", "D", "G_ema"):
        assert isinstance(data[name], PersistentRecord)
    G = data["G_ema"]
    assert G.class_name == "Generator"
    assert data["D"].class_name == "Discriminator"
    # init_kwargs survive exactly as the official code recorded them
    for key, value in meta["init_kwargs"].items():
        got = G.init_kwargs[key]
        if isinstance(value, dict):
            assert {k: got[k] for k in value} == value
        else:
            assert got == pytest.approx(value) if isinstance(value, float) else got == value


@pytest.mark.parametrize("pkl", PYTORCH_FIXTURES, ids=lambda p: p.parent.name)
def test_state_dict_keys_and_shapes_follow_init_kwargs(pkl: Path) -> None:
    kw = _meta(pkl)["init_kwargs"]
    G = read_official_pickle(pkl)["G_ema"]
    sd = G.state_dict()
    z_dim, w_dim, c_dim, res = kw["z_dim"], kw["w_dim"], kw["c_dim"], kw["img_resolution"]
    # mapping: fc0 takes z (and the embedded label, w_dim wide, when conditional)
    assert tuple(sd["mapping.fc0.weight"].shape)[1] == z_dim + (w_dim if c_dim else 0)
    assert tuple(sd["mapping.w_avg"].shape) == (w_dim,)
    assert ("mapping.embed.weight" in sd) == (c_dim > 0)
    num_layers = kw["mapping_kwargs"]["num_layers"]
    assert {k.split(".")[1] for k in sd if k.startswith("mapping.fc")} == {
        f"fc{i}" for i in range(num_layers)
    }
    sg3 = any(r.class_name == "SynthesisInput" for _, r in G.named_records())
    records = dict(G.named_records())
    if sg3:
        assert records["synthesis.input"].class_name == "SynthesisInput"
        assert G.attributes["num_ws"] == records["synthesis"].attributes["num_layers"] + 2
        last = records["synthesis"].attributes["layer_names"][-1]
        assert tuple(sd[f"synthesis.{last}.weight"].shape)[0] == kw["img_channels"]
        assert sd[f"synthesis.{last}.weight"].shape[-1] == kw["conv_kernel"] or last.endswith("_3")
    else:
        blocks = {k.split(".")[1] for k in sd if k.startswith("synthesis.b")}
        assert blocks == {f"b{2**i}" for i in range(2, int(math.log2(res)) + 1)}
        syn = kw["synthesis_kwargs"]
        channels = min(syn["channel_base"] // res, syn["channel_max"])
        assert tuple(sd[f"synthesis.b{res}.conv1.weight"].shape) == (channels, channels, 3, 3)
        assert tuple(sd[f"synthesis.b{res}.torgb.weight"].shape) == (kw["img_channels"], channels, 1, 1)
        assert G.attributes["num_ws"] == 2 * int(math.log2(res)) - 2
    for key, tensor in sd.items():
        assert isinstance(tensor, torch.Tensor), key
        assert torch.isfinite(tensor.float()).all(), key


@pytest.mark.parametrize("pkl", TF_FIXTURES, ids=lambda p: p.parent.name)
def test_tensorflow_pickle_is_pointed_elsewhere(pkl: Path) -> None:
    with pytest.raises(FormatError, match="TensorFlow"):
        read_official_pickle(pkl)


def test_reads_from_an_open_file() -> None:
    with open(PYTORCH_FIXTURES[0], "rb") as fh:
        data = read_official_pickle(fh)
    assert isinstance(data["G_ema"], PersistentRecord)
