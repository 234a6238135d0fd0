"""Network files built to exhaust memory or time with plain data: each is refused within 5 s and 512 MB.

The catalogue: trees of shared references (lists, a record's init arguments, tuples used as dict keys,
which the C unpickler hashes itself, a list filled after it was shared, the same inside a nested torch
archive), deep nesting, many small objects, memo growth, long strings, huge integers, overlapping tensor
views of one storage, a huge declared storage, a network configuration far larger than the file's
tensors (official pickle, TensorFlow pickle, our safetensors), zip-in-pickle and torch's zip format.

Each case prints the time to the refusal and how much the process's peak RSS grew. The end-to-end cases
go through the service's import child (`worker.model_import.run_sandboxed_import`) with the service's
default limits, and print the child's wall time.
"""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import resource
import struct
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from gan.config import GeneratorConfig, StyleGAN2SynthesisConfig
from gan.errors import GanError
from gan.io.checkpoint import FORMAT_NAME, FORMAT_VERSION, read_network
from gan.io.limits import DEFAULT_LIMITS
from gan.io.pickle_scan import scan_pickle
from gan.io.safe_pickle import safe_loads
from worker.model_import import ImportLimits, ModelImportError, run_sandboxed_import
from worker.settings import Settings

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "official"
MAX_SECONDS = 5.0
MAX_RSS_GROWTH = 512 * 2**20

_spec = importlib.util.spec_from_file_location(
    "hostile_builders", Path(__file__).parents[1] / "gan/io/hostile.py"
)
assert _spec is not None and _spec.loader is not None
hostile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hostile)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def refused_quickly(name: str, read: Callable[[], Any], match: str) -> None:
    """`read()` raises a GanError matching `match`, within MAX_SECONDS and MAX_RSS_GROWTH."""
    before = _peak_rss()
    start = time.perf_counter()
    with pytest.raises(GanError, match=match) as caught:
        read()
    seconds = time.perf_counter() - start
    growth = _peak_rss() - before
    print(f"{name}: refused in {seconds * 1000:.1f} ms, peak RSS +{growth / 2**20:.1f} MiB: {caught.value}")
    assert seconds < MAX_SECONDS
    assert growth < MAX_RSS_GROWTH


# -- hand-written pickles: the opcodes themselves --------------------------------------------------------


def binget(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)  # LONG_BINGET


def shared_list_tree(levels: int, width: int = 10) -> bytes:
    """L0 = []; L(i) = [L(i-1)] * width, by memo references: 10^levels values from ~40 bytes a level."""
    ops = [b"\x80\x04]\x94"]
    for level in range(1, levels + 1):
        ops.append(b"(" + binget(level - 1) * width + b"l\x94")
    return b"".join(ops) + b"."


def shared_tuple_key(levels: int) -> bytes:
    """T0 = (); T(i) = (T(i-1), T(i-1)); then {T(levels): 0}: dict insertion hashes 2^levels tuples."""
    ops = [b"\x80\x04)\x94"]
    for level in range(1, levels + 1):
        ops.append(binget(level - 1) * 2 + b"\x86\x94")  # TUPLE2, MEMOIZE
    return b"".join(ops) + b"}" + binget(levels) + b"K\x00s."  # EMPTY_DICT, key, BININT1 0, SETITEM


def filled_after_sharing(levels: int) -> bytes:
    """L0 shared 10^levels times while empty, then given 100 items: counted only once it is filled."""
    tree = shared_list_tree(levels)[:-1]
    return tree + binget(0) + b"(" + b"K\x01" * 100 + b"e0" + b"."  # APPENDS into L0, POP the copy


def test_the_fixtures_pass_the_scan_with_a_wide_margin() -> None:
    for meta in sorted(FIXTURES.glob("*/meta.json")):
        counts = scan_pickle((meta.parent / "network.pkl").read_bytes(), DEFAULT_LIMITS)
        print(f"{meta.parent.name}: {counts}")
        assert counts.ops * 8 < DEFAULT_LIMITS.max_pickle_ops
        assert counts.memo * 8 < DEFAULT_LIMITS.max_memo
        assert counts.max_elements * 8 < DEFAULT_LIMITS.max_elements
        assert counts.max_depth * 2 <= DEFAULT_LIMITS.max_depth


@pytest.mark.parametrize(
    ("name", "data", "match"),
    [
        ("billion laughs (lists)", shared_list_tree(30), "reference bomb"),
        ("tuple tree as a dict key", shared_tuple_key(60), "reference bomb"),
        ("list filled after it was shared", filled_after_sharing(5), "reference bomb"),
        ("deep nesting by MARKs", b"\x80\x04" + b"(" * 1000 + b"]" + b"l" * 1000 + b".", "nested"),
        ("deep nesting by TUPLE1", b"\x80\x04)" + b"\x85" * 1_000_000 + b".", "nested"),
        ("many small objects", b"\x80\x04(" + b"}" * 2_000_000 + b"l.", "opcodes"),
        ("memo growth", b"\x80\x04]" + b"\x94" * 150_000 + b".", "memoizes"),
        ("long string", b"\x80\x04\x8d" + struct.pack("<Q", 17 << 20) + b"a" * (17 << 20) + b".", "string"),
        (
            "huge integer",
            b"\x80\x04\x8b" + struct.pack("<i", 1 << 20) + b"\x01" * (1 << 20) + b".",
            "integer",
        ),
    ],
)
def test_opcode_bombs_are_refused_before_unpickling(name: str, data: bytes, match: str) -> None:
    print(f"{name}: {len(data)} bytes")
    refused_quickly(name, lambda: safe_loads(data), match)


def test_the_billion_laughs_would_hang_without_the_scan() -> None:
    """Control: the same file is a valid pickle whose expanded walk is astronomically large."""
    value = pickle.loads(shared_list_tree(30))
    node, depth = value, 0
    while node:
        node, depth = node[0], depth + 1
    assert depth == 30  # 10^30 leaves, all the same empty list


# -- network-shaped bombs --------------------------------------------------------------------------------


def official_pickle(state: dict[str, Any], init_kwargs: dict[str, Any] | None = None) -> bytes:
    with hostile.fake_modules() as mods:
        extra = {"_init_kwargs": init_kwargs or {}}
        G = hostile.persistent(mods, "Generator", hostile.module_state(**state, **extra))
        return pickle.dumps({"G_ema": G}, 4)


def test_billion_laughs_in_a_records_init_arguments(tmp_path: Path) -> None:
    laughs: Any = []
    for _ in range(40):
        laughs = [laughs] * 10  # pickled once per level: the memo shares them
    data = official_pickle({}, {"mapping_kwargs": {"x": laughs}})
    print(f"{len(data)} bytes")
    path = hostile.write(tmp_path / "laughs.pkl", data)
    refused_quickly("billion laughs in init kwargs", lambda: read_network(path), "reference bomb")


def test_overlapping_views_of_one_storage() -> None:
    storage = hostile.Reduce(torch.storage._load_from_bytes, hostile.storage_bytes(torch.zeros(1 << 20)))
    views = [
        hostile.Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (1 << 20,), (1,), False, OrderedDict())
        for _ in range(1000)
    ]  # one 4 MiB storage (pickled once, then memo references), 4 GiB declared by the views
    data = pickle.dumps(views, 4)
    print(f"{len(data)} bytes, views declare {1000 * 4} MiB")
    refused_quickly("overlapping views", lambda: safe_loads(data), "overlapping views")


def test_huge_declared_storage() -> None:
    # The object pickle: BINPERSID of ('storage', torch.FloatStorage, '0', 'cpu', 2^40, None)
    pid = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
    pid += b"\x8a\x06" + (1 << 40).to_bytes(6, "little") + b"Nt" + b"Q."
    archive = hostile.legacy_archive(pid, ["0"], struct.pack("<q", 1 << 40))
    data = hostile.reduce_pickle("torch.storage", "_load_from_bytes", (archive,), 4)
    refused_quickly("huge declared storage", lambda: safe_loads(data), "storage|persistent|refused")


def test_hash_bomb_inside_a_nested_torch_archive() -> None:
    sys_info = shared_tuple_key(60)  # the archive's sys-info pickle is a dict with a tuple-tree key
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, 2) + pickle.dumps(1001, 2)
    data = hostile.reduce_pickle("torch.storage", "_load_from_bytes", (magic + sys_info,), 4)
    refused_quickly("hash bomb in a nested archive", lambda: safe_loads(data), "reference bomb")


def test_zip_inside_a_pickle() -> None:
    buf = io.BytesIO()
    torch.save(torch.zeros(4).untyped_storage(), buf)  # today's zip format, as torch.load would read it
    data = hostile.reduce_pickle("torch.storage", "_load_from_bytes", (buf.getvalue(),), 4)
    refused_quickly("zip-in-pickle", lambda: safe_loads(data), "nested torch archive")


def test_torch_zip_file_with_a_huge_entry(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"G_ema": None}))
        zf.writestr("archive/data/0", b"\x00" * (64 << 20), compress_type=zipfile.ZIP_DEFLATED)
    print(f"{path.stat().st_size} bytes on disk, 64 MiB inside")
    refused_quickly("torch zip format", lambda: read_network(path), "not a network file")


def test_official_configuration_far_larger_than_its_tensors(tmp_path: Path) -> None:
    init = {
        "z_dim": 512,
        "w_dim": 512,
        "c_dim": 0,
        "img_resolution": 8192,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 8},
        "synthesis_kwargs": {"channel_base": 1 << 30, "channel_max": 1 << 14},
    }
    data = official_pickle({"parameters": {"w": torch.zeros(1)}}, init)  # hundreds of GB if built
    path = hostile.write(tmp_path / "config.pkl", data)
    refused_quickly("official config bomb", lambda: read_network(path), "do not match our network")


def test_safetensors_configuration_far_larger_than_its_tensors(tmp_path: Path) -> None:
    config = GeneratorConfig(
        img_resolution=8192, synthesis=StyleGAN2SynthesisConfig(channel_base=1 << 30, channel_max=1 << 14)
    )
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config.to_dict()),
    }
    header = {"__metadata__": metadata, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    raw = json.dumps(header).encode()
    path = tmp_path / "config.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x00" * 4)
    refused_quickly("safetensors config bomb", lambda: read_network(path), "do not match our network")


# -- through the service's import child ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("billion laughs", lambda: shared_list_tree(30)),
        ("tuple-tree dict key", lambda: shared_tuple_key(60)),
    ],
)
def test_the_import_child_refuses_bombs_within_seconds(
    name: str, build: Callable[[], bytes], tmp_path: Path
) -> None:
    src = hostile.write(tmp_path / "bomb.pkl", build())
    limits = ImportLimits.from_settings(Settings(data_dir=tmp_path))
    start = time.perf_counter()
    with pytest.raises(ModelImportError, match="reference bomb") as caught:
        run_sandboxed_import(src, tmp_path / "out.safetensors", limits)
    seconds = time.perf_counter() - start
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"{name} through the import child: refused in {seconds:.2f} s (child start included), "
        f"largest child RSS so far {child_rss:.0f} MiB: {caught.value}"
    )
    # The child imports torch first (about 1-2 s on CI); the refusal itself takes milliseconds.
    assert seconds < MAX_SECONDS + 5
    assert not (tmp_path / "out.safetensors").exists()
