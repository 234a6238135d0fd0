"""Our generator file: safetensors weights + the JSON `GeneratorConfig` in the safetensors metadata.

No pickle is written or read here, so loading one of our files cannot run code; its cost is bounded by
checking the header (size, tensor count, dtypes, shapes) before any tensor is read. `load_network`
opens any network file we know by its content, not its name: our format, an official PyTorch pickle
or an old TensorFlow pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from gan.config import GeneratorConfig
from gan.errors import ConfigError, FormatError
from gan.generator import Generator, build_generator
from gan.io.files import atomic_write_bytes
from gan.io.limits import DEFAULT_LIMITS, ReadLimits
from gan.io.official_pickle import build_matching, networks_from_official
from gan.io.safe_pickle import TFNetworkRecord, is_pickle, read_bytes_bounded, safe_loads
from gan.io.tf_pickle import networks_from_tf

FORMAT_NAME = "stylegan-service/generator"
FORMAT_VERSION = 1
TRAINING_FORMAT_NAME = "stylegan-service/training-checkpoint"  # gan/training/checkpoint.py

FileFormat = Literal["stylegan-service", "official-pytorch-pickle", "tensorflow-pickle"]

# dtypes a generator file may hold (safetensors names); weights are float, w_avg etc. too.
_SAFETENSORS_DTYPES = frozenset({"F16", "BF16", "F32", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"})


# -- writing --------------------------------------------------------------------------------------


def save_generator(
    G: Generator, path: str | os.PathLike[str], *, license_note: str | None = None, source: str | None = None
) -> Path:
    """Write G's weights and config; `license_note` and `source` travel with the weights (a converted
    NVIDIA network stays under NVIDIA's licence, whatever this project's licence is)."""
    config = getattr(G, "config", None)
    if not isinstance(config, GeneratorConfig):
        raise ConfigError("save_generator needs one of our Generator modules (with a GeneratorConfig)")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in G.state_dict().items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config.to_dict(), sort_keys=True),
    }
    if license_note:
        metadata["license"] = license_note
    if source:
        metadata["source"] = source
    path = Path(path)
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))
    return path


# -- reading ours ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Safetensors:
    metadata: dict[str, str]
    tensors: dict[str, torch.Tensor]


def _read_safetensors_header(data: bytes, limits: ReadLimits) -> dict[str, Any]:
    """Check the header before safetensors allocates anything (format: u64 length, JSON, raw bytes)."""
    if len(data) < 8:
        raise FormatError("file is too short to be safetensors")
    (n,) = struct.unpack("<Q", data[:8])
    if n > limits.max_header_bytes or 8 + n > len(data):
        raise FormatError(f"safetensors header of {n} bytes is implausible for a {len(data)}-byte file")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"safetensors header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise FormatError("safetensors header is not a JSON object")
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(entries) > limits.max_tensors:
        raise FormatError(f"file holds {len(entries)} tensors, more than {limits.max_tensors}")
    for name, entry in entries.items():
        if not isinstance(entry, dict) or entry.get("dtype") not in _SAFETENSORS_DTYPES:
            raise FormatError(f"tensor {name!r} has an unsupported dtype")
        shape = entry.get("shape")
        if not isinstance(shape, list) or len(shape) > limits.max_ndim:
            raise FormatError(f"tensor {name!r} has an implausible shape")
        if (
            not all(isinstance(s, int) and s >= 0 for s in shape)
            or math.prod(shape) > limits.max_tensor_numel
        ):
            raise FormatError(f"tensor {name!r} has an implausible shape {shape}")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError("safetensors metadata is not a map of strings")
    return meta


def _read_safetensors(data: bytes, limits: ReadLimits) -> _Safetensors:
    metadata = _read_safetensors_header(data, limits)
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own error type for offsets, sizes, overlaps
        raise FormatError(f"damaged safetensors file: {exc}") from exc
    return _Safetensors(metadata, tensors)


def _config_from_metadata(metadata: dict[str, str]) -> GeneratorConfig:
    fmt = metadata.get("format")
    if fmt != FORMAT_NAME:
        raise FormatError(f"safetensors file of format {fmt!r}, not a {FORMAT_NAME} file")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise FormatError(f"{FORMAT_NAME} version {metadata.get('format_version')!r} is not one we read")
    try:
        config = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise FormatError(f"the file's generator config is missing or not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise FormatError("the file's generator config is not a JSON object")
    return GeneratorConfig.from_dict(config)


def _generator_from_safetensors(st: _Safetensors) -> Generator:
    config = _config_from_metadata(st.metadata)
    return build_matching(lambda: build_generator(config), st.tensors, "generator")


def load_generator(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", limits: ReadLimits = DEFAULT_LIMITS
) -> Generator:
    """One of our generator files, on `device`, in eval mode."""
    st = _read_safetensors(read_bytes_bounded(path, limits), limits)
    return _generator_from_safetensors(st).to(device).eval()


# -- any network file ----------------------------------------------------------------------------------

# What a file's first bytes say it is: safetensors starts with a little-endian u64 header length and then
# the JSON header's "{"; a pickle with its protocol opcode.
FileKind = Literal["safetensors", "pickle"]


def sniff_network_file(head: bytes) -> FileKind | None:
    """The container of a network file from its first bytes (at least 9), or None for neither. The one
    place a network file's type is told from its content; what is inside is checked when it is read."""
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if is_pickle(head[:2]):
        return "pickle"
    return None


@dataclass(frozen=True)
class LoadedNetwork:
    G: Generator
    format: FileFormat
    metadata: dict[str, str]
    sha256: str


@dataclass(frozen=True)
class LoadedNetworks:
    """The networks `read_networks` found, by official name ("G_ema", "G", "D")."""

    networks: dict[str, nn.Module]
    format: FileFormat
    metadata: dict[str, str]
    sha256: str


def read_networks(
    path: str | os.PathLike[str],
    which: Sequence[str] = ("G_ema",),
    *,
    require_all: bool = True,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> LoadedNetworks:
    """The networks `which` from any network file, told apart by content: ours (it holds G_ema alone),
    an official PyTorch pickle, or an old TensorFlow pickle (Gs is G_ema). With `require_all=False`, the
    official pickle's networks that are present (at least one) and our file's G_ema, as the official
    resume of a pickle without D (`require_all=False` in its `copy_params_and_buffers`)."""
    data = read_bytes_bounded(path, limits)
    digest = hashlib.sha256(data).hexdigest()
    kind = sniff_network_file(data[:16])
    if kind == "safetensors":
        st = _read_safetensors(data, limits)
        if st.metadata.get("format") == TRAINING_FORMAT_NAME:
            raise FormatError(
                "this is a training checkpoint; export its generator first (stylegan convert reads "
                "generator files and network pickles)"
            )
        if require_all and tuple(which) != ("G_ema",):
            raise FormatError(f"a {FORMAT_NAME} file holds G_ema alone, not {', '.join(which)}")
        G = _generator_from_safetensors(st)
        return LoadedNetworks({"G_ema": G}, "stylegan-service", st.metadata, digest)
    if kind == "pickle":
        obj = safe_loads(data, limits)
        if isinstance(obj, tuple) and obj and all(isinstance(o, TFNetworkRecord) for o in obj):
            return LoadedNetworks(networks_from_tf(obj, which), "tensorflow-pickle", {}, digest)
        if not require_all:
            if not isinstance(obj, dict):
                raise FormatError("not an official network pickle")
            present = [name for name in which if name in obj]
            if not present:
                raise FormatError(f"the pickle holds none of {', '.join(which)}")
            which = present
        return LoadedNetworks(networks_from_official(obj, which), "official-pytorch-pickle", {}, digest)
    raise FormatError("not a network file we read (neither safetensors nor a pickle)")


def _load_any(path: str | os.PathLike[str], limits: ReadLimits) -> LoadedNetwork:
    loaded = read_networks(path, ("G_ema",), limits=limits)
    G = loaded.networks["G_ema"]
    assert isinstance(G, Generator)
    return LoadedNetwork(G, loaded.format, loaded.metadata, loaded.sha256)


def read_network(path: str | os.PathLike[str], limits: ReadLimits = DEFAULT_LIMITS) -> LoadedNetwork:
    """Like `load_network`, with the format the file came in, its metadata and sha256, from one read
    (the service's model import needs all four and should not parse a large pickle twice)."""
    return _load_any(path, limits)


def load_network(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", limits: ReadLimits = DEFAULT_LIMITS
) -> Generator:
    """The generator in any file we read, told apart by content: ours, official PyTorch pickle (its
    G_ema), or TensorFlow pickle (its Gs)."""
    return _load_any(path, limits).G.to(device).eval()


def convert_network(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    license_note: str | None = None,
    source: str | None = None,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> Path:
    """Any network file -> ours. A licence note and source already in `src` carry over unless replaced;
    for a pickle, the source defaults to its file name and sha256."""
    loaded = _load_any(src, limits)
    if source is None:
        source = loaded.metadata.get("source") or f"{Path(src).name} (sha256 {loaded.sha256})"
    if license_note is None:
        license_note = loaded.metadata.get("license")
    return save_generator(loaded.G, dst, license_note=license_note, source=source)


@dataclass(frozen=True)
class NetworkInfo:
    format: FileFormat
    architecture: str
    resolution: int
    z_dim: int
    w_dim: int
    c_dim: int
    num_ws: int
    num_params: int
    sha256: str
    license: str | None
    source: str | None
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect_network(path: str | os.PathLike[str], limits: ReadLimits = DEFAULT_LIMITS) -> NetworkInfo:
    """What `stylegan info` prints: read through the same safe path as loading."""
    loaded = _load_any(path, limits)
    G = loaded.G
    config: GeneratorConfig = G.config
    return NetworkInfo(
        format=loaded.format,
        architecture=config.architecture,
        resolution=config.img_resolution,
        z_dim=config.z_dim,
        w_dim=config.w_dim,
        c_dim=config.c_dim,
        num_ws=config.num_ws,
        num_params=sum(p.numel() for p in G.parameters()),
        sha256=loaded.sha256,
        license=loaded.metadata.get("license"),
        source=loaded.metadata.get("source"),
        config=config.to_dict(),
    )


__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LoadedNetwork",
    "LoadedNetworks",
    "NetworkInfo",
    "convert_network",
    "inspect_network",
    "load_generator",
    "load_network",
    "read_network",
    "read_networks",
    "save_generator",
    "sniff_network_file",
]
