"""A restricted unpickler for NVIDIA's network pickles: data in, nothing run.

A pickle is a small program: GLOBAL names any importable callable and REDUCE calls it. We read the
official files with a `pickle.Unpickler` whose `find_class` knows an exact list of (module, name) pairs,
each mapped to a function of ours that rebuilds plain data (a tensor, a numpy array, a
`PersistentRecord`) after checking it. No pair maps to the real object of that name, no module is
allowed whole, and everything else is refused with `UnsafePickleError` naming the global.

Facts about the format (read from stylegan2-ada-pytorch / stylegan3 `torch_utils/persistence.py`,
torch's `_utils.py` and `serialization.py`, numpy's pickling):

- each network is `torch_utils.persistence._reconstruct_persistent_obj(meta)`, where `meta` holds
  `class_name`, `module_src` (the class's source, which the official loader executes; we never do) and
  `state` (the module's `__dict__`: `_parameters`, `_buffers`, `_modules`, `_init_kwargs`, ...);
- tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, parameters wrap
  that in `_rebuild_parameter`, and each storage is `torch.storage._load_from_bytes(b)`, where `b` is a
  whole legacy (non-zip) `torch.save` archive; the official code calls `torch.load` on it, which would
  run any global inside, so we parse that archive here with the same kind of restricted unpickler;
- numpy values (attributes such as StyleGAN3's `sampling_rate`, `in_size`) come as
  `numpy.core.multiarray._reconstruct` + BUILD or `numpy.core.multiarray.scalar` (numpy 1.x, the real
  2020-21 files) or `numpy._core.numeric._frombuffer` / `numpy._core.multiarray.scalar` (numpy 2.x);
- `dnnlib.util.EasyDict` (a dict subclass) holds kwargs and becomes a plain dict;
- old TensorFlow pickles are `dnnlib.tflib.network.Network` objects built by NEWOBJ + BUILD.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

import numpy as np
import torch

from gan.errors import FormatError, GanError, UnsafePickleError
from gan.io.limits import DEFAULT_LIMITS, ReadLimits
from gan.io.pickle_scan import scan_pickle

PICKLE_PROTOCOL_BYTE = 0x80  # protocols >= 2 start with PROTO; 0 and 1 start with an opcode

# The persistent classes of the official code (stylegan2-ada-pytorch `training/networks.py` and
# `augment.py`; stylegan3 `training/networks_stylegan2.py` and `networks_stylegan3.py`). A record of any
# other class name is refused: we would not know what its state means.
PERSISTENT_CLASSES = frozenset(
    {
        "Generator",
        "MappingNetwork",
        "SynthesisNetwork",
        "SynthesisBlock",
        "SynthesisLayer",
        "SynthesisInput",
        "ToRGBLayer",
        "FullyConnectedLayer",
        "Conv2dLayer",
        "Discriminator",
        "DiscriminatorBlock",
        "DiscriminatorEpilogue",
        "MinibatchStdLayer",
        "AugmentPipe",
    }
)

# torch.nn.Module.__dict__ entries that carry no model state (hooks, flags); everything else that is
# not a parameter, buffer, child or init argument is kept as an attribute.
_MODULE_INTERNALS = frozenset({"training", "_non_persistent_buffers_set", "_is_full_backward_hook"})

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

# numpy dtypes a network file may hold: numbers only (an object dtype would carry pickled objects).
_NUMPY_DTYPES = frozenset(
    {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "bool", "?"}
)

# torch's legacy `torch.save` archive (serialization.py, `_legacy_save`): a magic number and version.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


@dataclass
class PersistentRecord:
    """One official network module as plain data: what `_reconstruct_persistent_obj` would have built,
    minus the class (its `module_src` is dropped unread). The tensors in `parameters` and `buffers` are
    read-only views of the file's bytes: read them, or take writable copies from `state_dict()`."""

    class_name: str
    init_args: tuple[Any, ...]
    init_kwargs: dict[str, Any]
    parameters: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    children: dict[str, PersistentRecord] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    non_persistent_buffers: frozenset[str] = frozenset()

    def named_records(self, prefix: str = "") -> Iterator[tuple[str, PersistentRecord]]:
        """('', self), then ('mapping', ...), ('synthesis.b4', ...), ... depth first, as torch names them."""
        yield prefix, self
        for name, child in self.children.items():
            yield from child.named_records(f"{prefix}.{name}" if prefix else name)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters and persistent buffers under the official dotted keys, in torch's order: writable
        copies, each its own contiguous storage (`parameters` and `buffers` are read-only views of the
        file's bytes)."""
        out: dict[str, torch.Tensor] = {}
        for path, record in self.named_records():
            dot = f"{path}." if path else ""
            for name, tensor in record.parameters.items():
                out[dot + name] = tensor.clone(memory_format=torch.contiguous_format)
            for name, tensor in record.buffers.items():
                if name not in record.non_persistent_buffers:
                    out[dot + name] = tensor.clone(memory_format=torch.contiguous_format)
        return out


class TFNetworkRecord:
    """One `dnnlib.tflib.network.Network` of an old TensorFlow pickle, as the state dict it pickled.

    Created empty by NEWOBJ and filled by BUILD (`__setstate__`), as the pickle format requires; the
    state is checked for shape only here, and its meaning is read by `gan.io.tf_pickle`.
    """

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise FormatError("TensorFlow network state is not a dict")
        self.state = state

    @property
    def name(self) -> str:
        return str(self.state.get("name", ""))


@dataclass
class _Storage:
    """A flat tensor rebuilt from a nested legacy archive; tensors are strided views of it."""

    flat: torch.Tensor  # [numel], its own dtype


class _NdarrayType:
    """Stands for `numpy.ndarray` as the first argument of `_reconstruct`; it cannot be called."""


class _DtypeSpec:
    """`numpy.dtype(code, align, copy)` + BUILD(state): checked and turned into a numeric dtype."""

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        if not isinstance(code, str) or code not in _NUMPY_DTYPES:
            raise FormatError(f"numpy dtype {code!r} is not a plain numeric dtype")
        self.code = code
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 5:
            raise FormatError("numpy dtype state is malformed")
        byteorder, subarray, names, fields = state[1], state[2], state[3], state[4]
        if byteorder not in ("<", ">", "|", "=") or subarray is not None or names is not None:
            raise FormatError("numpy dtype with fields or sub-arrays is not a plain numeric dtype")
        if fields is not None:
            raise FormatError("numpy dtype with fields is not a plain numeric dtype")
        self.byteorder = byteorder

    def to_numpy(self) -> np.dtype[Any]:
        order = "" if self.byteorder in ("|", "=") else self.byteorder
        return np.dtype(order + self.code)


class _ArrayBuilder:
    """`numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')` + BUILD(state) -> an ndarray later.

    The pickle fills the array in place after creating it, so containers hold this object;
    `_Resolver` swaps it for the finished array.
    """

    def __init__(self, limits: ReadLimits) -> None:
        self._limits = limits
        self.array: np.ndarray[Any, Any] | None = None

    def __setstate__(self, state: Any) -> None:
        # ndarray state: (version, shape, dtype, is_fortran, rawdata); very old files omit version
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise FormatError("numpy array state is malformed")
        shape, dtype, is_fortran, raw = state
        if not isinstance(dtype, _DtypeSpec) or not isinstance(raw, bytes | bytearray):
            raise FormatError("numpy array is not a plain numeric array")
        self.array = _array_from_bytes(raw, dtype, shape, "F" if is_fortran else "C", self._limits)


def _check_shape(shape: Any, limits: ReadLimits) -> tuple[int, ...]:
    if not isinstance(shape, tuple | list) or len(shape) > limits.max_ndim:
        raise FormatError(f"implausible shape {shape!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise FormatError(f"implausible shape {shape!r}")
    if math.prod(shape) > limits.max_tensor_numel:
        raise FormatError(f"tensor of shape {tuple(shape)} exceeds {limits.max_tensor_numel} elements")
    return tuple(shape)


def _array_from_bytes(
    raw: bytes | bytearray, dtype: _DtypeSpec, shape: Any, order: Any, limits: ReadLimits
) -> np.ndarray[Any, Any]:
    shape = _check_shape(shape, limits)
    if order not in ("C", "F"):
        raise FormatError(f"numpy array order {order!r} is not C or F")
    np_dtype = dtype.to_numpy()
    if len(raw) != math.prod(shape) * np_dtype.itemsize:
        raise FormatError(f"numpy array of shape {shape} has {len(raw)} bytes of data")
    return np.frombuffer(bytearray(raw), dtype=np_dtype).reshape(shape, order=order)  # writable copy


class _DataOnlyUnpickler(pickle.Unpickler):
    """Plain containers and numbers only: the header pickles of a nested torch archive."""

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(f"refused global '{module}.{name}' in a nested torch archive")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused persistent id in a nested torch archive")


class _StorageRef:
    def __init__(self, dtype: torch.dtype, key: str, numel: int) -> None:
        self.dtype, self.key, self.numel = dtype, key, numel


class _StorageTypeName:
    """Stands for `torch.FloatStorage` etc. inside a persistent id; only its dtype is used."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _LegacyArchiveUnpickler(pickle.Unpickler):
    """The object pickle of a nested legacy archive: storage type names and storage persistent ids."""

    def __init__(self, file: IO[bytes], limits: ReadLimits) -> None:
        super().__init__(file)
        self._limits = limits
        self.refs: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageTypeName(_STORAGE_DTYPES[name])
        raise UnsafePickleError(f"refused global '{module}.{name}' in a nested torch archive")

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage_type, key, location, numel, view_metadata), as `_legacy_save` writes it
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise UnsafePickleError(f"refused persistent id {str(pid)[:60]!r} in a nested torch archive")
        _, storage_type, key, location, numel, view = pid
        if not isinstance(storage_type, _StorageTypeName) or not isinstance(key, str):
            raise FormatError("nested torch archive has a malformed storage id")
        if not isinstance(location, str) or not (location == "cpu" or location.startswith("cuda")):
            raise FormatError(f"nested torch archive has storage location {location!r}")
        if view is not None:
            raise FormatError("nested torch archive holds a storage view, which we do not read")
        if not isinstance(numel, int) or not 0 <= numel <= self._limits.max_tensor_numel:
            raise FormatError(f"nested torch archive declares {numel!r} storage elements")
        ref = self.refs.get(key)
        if ref is None:
            ref = self.refs[key] = _StorageRef(storage_type.dtype, key, numel)
        return ref


class SafeUnpickler(pickle.Unpickler):
    """The allowlisted unpickler; one instance reads one file and counts what it rebuilds."""

    def __init__(self, file: IO[bytes], limits: ReadLimits = DEFAULT_LIMITS) -> None:
        super().__init__(file)
        self._limits = limits
        self._num_tensors = 0
        self._total_bytes = 0  # bytes of the storages rebuilt
        self._view_bytes = 0  # bytes the tensors over them declare
        self._good_headers: set[bytes] = set()  # nested archive headers read and accepted
        # One walk budget for the whole file: every record's state and the top level draw on it.
        self.resolver = _Resolver(limits)
        self._allowed: dict[tuple[str, str], Any] = {
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): self._persistent_obj,
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter_with_state,
            ("torch.storage", "_load_from_bytes"): self._load_from_bytes,
            ("collections", "OrderedDict"): dict,
            ("dnnlib.util", "EasyDict"): dict,
            # protocols 2-3 spell a set as set(list); the builtin is harmless on a list of plain values
            ("builtins", "set"): _make_set,
            ("__builtin__", "set"): _make_set,
            # protocol 2 spells bytes as _codecs.encode(str, 'latin1')
            ("_codecs", "encode"): _latin1_bytes,
            ("numpy", "dtype"): _DtypeSpec,
            ("numpy", "ndarray"): _NdarrayType,
            ("numpy.core.multiarray", "_reconstruct"): self._np_reconstruct,
            ("numpy.core.multiarray", "scalar"): self._np_scalar,
            ("numpy._core.multiarray", "_reconstruct"): self._np_reconstruct,
            ("numpy._core.multiarray", "scalar"): self._np_scalar,
            ("numpy._core.numeric", "_frombuffer"): self._np_frombuffer,
            ("numpy.core.numeric", "_frombuffer"): self._np_frombuffer,
            ("dnnlib.tflib.network", "Network"): TFNetworkRecord,
        }

    def release(self) -> None:
        """Drop the allowlist (bound methods of this unpickler: a reference cycle) and the memo."""
        self._allowed = {}
        self.memo = {}

    def find_class(self, module: str, name: str) -> Any:
        target = self._allowed.get((module, name))
        if target is None:
            raise UnsafePickleError(f"refused global '{module}.{name}'")
        return target

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refused persistent id {str(pid)[:60]!r}")

    # -- torch_utils.persistence -----------------------------------------------------------------

    def _persistent_obj(self, meta: Any) -> PersistentRecord:
        if not isinstance(meta, dict) or meta.get("type") != "class":
            raise FormatError("persistent object meta is not a class record")
        class_name, state = meta.get("class_name"), meta.get("state")
        if not isinstance(class_name, str) or not isinstance(state, dict):
            raise FormatError("persistent object meta lacks class_name or state")
        if class_name not in PERSISTENT_CLASSES:
            raise UnsafePickleError(f"refused persistent class '{class_name}'")
        # meta['module_src'] is the class's Python source: never executed, never kept.
        state = self.resolver.resolve(state)
        init_args = state.pop("_init_args", ())
        init_kwargs = state.pop("_init_kwargs", {})
        if not isinstance(init_args, tuple | list) or not isinstance(init_kwargs, dict):
            raise FormatError(f"{class_name}: malformed init arguments")
        record = PersistentRecord(class_name, tuple(init_args), init_kwargs)
        for name, value in _as_dict(state.pop("_parameters", {}), class_name).items():
            if value is not None:
                record.parameters[name] = _as_tensor(value, f"{class_name}.{name}")
        for name, value in _as_dict(state.pop("_buffers", {}), class_name).items():
            if value is not None:
                record.buffers[name] = _as_tensor(value, f"{class_name}.{name}")
        for name, child in _as_dict(state.pop("_modules", {}), class_name).items():
            if child is None:
                continue
            if not isinstance(child, PersistentRecord):
                raise FormatError(f"{class_name}.{name} is not a network module")
            record.children[name] = child
        non_persistent = state.pop("_non_persistent_buffers_set", set())
        record.non_persistent_buffers = frozenset(non_persistent) if non_persistent else frozenset()
        for name, value in state.items():
            if name in _MODULE_INTERNALS or (name.startswith("_") and "hooks" in name):
                continue
            record.attributes[name] = value
        return record

    # -- torch tensors ---------------------------------------------------------------------------

    def _load_from_bytes(self, data: Any) -> _Storage:
        if not isinstance(data, bytes | bytearray):
            raise FormatError("torch storage is not given as bytes")
        storage = read_legacy_storage(bytes(data), self._limits, self._good_headers)
        self._total_bytes += storage.flat.numel() * storage.flat.element_size()
        if self._total_bytes > self._limits.max_total_bytes:
            raise FormatError(f"tensor storages exceed {self._limits.max_total_bytes} bytes in total")
        return storage

    def _rebuild_tensor_v2(
        self,
        storage: Any,
        offset: Any,
        size: Any,
        stride: Any,
        requires_grad: Any = False,
        backward_hooks: Any = None,
        metadata: Any = None,
    ) -> torch.Tensor:
        if not isinstance(storage, _Storage):
            raise FormatError("tensor is not built on a storage")
        if backward_hooks or metadata:
            raise FormatError("tensor carries hooks or metadata, which network files never need")
        self._num_tensors += 1
        if self._num_tensors > self._limits.max_tensors:
            raise FormatError(f"file holds more than {self._limits.max_tensors} tensors")
        size = _check_shape(size, self._limits)
        if not isinstance(stride, tuple | list) or len(stride) != len(size):
            raise FormatError(f"tensor stride {stride!r} does not match its size {size}")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in stride):
            raise FormatError(f"implausible tensor stride {stride!r}")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise FormatError(f"implausible storage offset {offset!r}")
        numel = storage.flat.numel()
        # Views may overlap, so many tensors over one storage could declare far more than the file holds;
        # each later copy (a module's load_state_dict) would make that real.
        self._view_bytes += math.prod(size) * storage.flat.element_size()
        allowed = self._limits.max_view_ratio * max(self._total_bytes, 1)
        if self._view_bytes > allowed:
            raise FormatError(
                f"tensors declare {self._view_bytes} bytes over {self._total_bytes} bytes of storage "
                f"(more than {self._limits.max_view_ratio:g} times: overlapping views)"
            )
        if math.prod(size) > 0:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
            if last >= numel:
                raise FormatError(
                    f"tensor of size {size}, stride {tuple(stride)} at offset {offset} overruns its "
                    f"storage of {numel} elements"
                )
        elif offset > numel:
            raise FormatError(f"storage offset {offset} beyond a storage of {numel} elements")
        return storage.flat.as_strided(size, tuple(stride), offset)

    def _rebuild_parameter(self, data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Any:
        if not isinstance(data, torch.Tensor):
            raise FormatError("parameter does not wrap a tensor")
        if backward_hooks:
            raise FormatError("parameter carries hooks, which network files never need")
        return data

    def _rebuild_parameter_with_state(
        self, data: Any, requires_grad: Any, backward_hooks: Any, state: Any
    ) -> Any:
        if state:
            raise FormatError("parameter carries extra state, which network files never need")
        return self._rebuild_parameter(data, requires_grad, backward_hooks)

    # -- numpy -----------------------------------------------------------------------------------

    def _np_reconstruct(self, cls: Any, shape: Any, code: Any) -> _ArrayBuilder:
        if cls is not _NdarrayType:
            raise FormatError("numpy _reconstruct of something other than ndarray")
        return _ArrayBuilder(self._limits)

    def _np_scalar(self, dtype: Any, raw: Any = None) -> Any:
        if not isinstance(dtype, _DtypeSpec) or not isinstance(raw, bytes | bytearray):
            raise FormatError("numpy scalar is not a plain number")
        np_dtype = dtype.to_numpy()
        if len(raw) != np_dtype.itemsize:
            raise FormatError(f"numpy scalar of dtype {np_dtype} has {len(raw)} bytes")
        return np.frombuffer(bytes(raw), dtype=np_dtype)[0]

    def _np_frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray[Any, Any]:
        if isinstance(buf, pickle.PickleBuffer):
            buf = bytes(buf.raw())
        if not isinstance(dtype, _DtypeSpec) or not isinstance(buf, bytes | bytearray):
            raise FormatError("numpy _frombuffer is not a plain numeric array")
        return _array_from_bytes(buf, dtype, shape, order, self._limits)


def _make_set(items: Any = ()) -> set[Any]:
    if not isinstance(items, list | tuple):
        raise FormatError("set() of something other than a list")
    try:
        return set(items)
    except TypeError as exc:
        raise FormatError(f"set of unhashable values: {exc}") from exc


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise FormatError("_codecs.encode is only read for latin1 text (protocol 2 bytes)")
    return text.encode("latin1")


def _as_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise FormatError(f"{where}: module state entry is not a dict of names")
    return value


def _as_tensor(value: Any, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise FormatError(f"{where} is not a tensor")
    return value


class _Resolver:
    """Swaps finished numpy placeholders for arrays inside plain containers, with bounded nesting and a
    bounded expanded size.

    Each distinct container is rebuilt once (memoized by identity), so shared references stay shared and
    the walk costs the number of distinct objects, not 10^depth for a tree of shared references; but
    every reference draws its whole expanded size from one budget (`max_elements`), because whatever reads
    the result later (configs, JSON) walks it expanded.
    """

    def __init__(self, limits: ReadLimits) -> None:
        self._limits = limits
        self._done: dict[int, tuple[Any, int]] = {}  # id -> (rebuilt, expanded size)
        self._keep: list[Any] = []  # the originals, so that their ids stay theirs during the walk
        self.elements = 0

    def resolve(self, obj: Any) -> Any:
        rebuilt, size = self._walk(obj, self._limits.max_depth)
        self._spend(size)
        return rebuilt

    def _spend(self, size: int) -> None:
        self.elements += size
        if self.elements > self._limits.max_elements:
            raise FormatError(
                f"the file's values expand to more than {self._limits.max_elements} elements "
                "(shared references counted each time they are used: a reference bomb)"
            )

    def _walk(self, obj: Any, depth: int) -> tuple[Any, int]:
        if depth <= 0:
            raise FormatError("containers nested too deeply")
        if isinstance(obj, _ArrayBuilder):
            if obj.array is None:
                raise FormatError("numpy array was never filled in")
            return obj.array, 1
        if isinstance(obj, _DtypeSpec | _NdarrayType | _StorageTypeName | _Storage):
            raise FormatError("stray numpy dtype or storage in the data")
        if obj is _NdarrayType:
            raise FormatError("stray numpy.ndarray in the data")
        if not isinstance(obj, TFNetworkRecord | dict | list | tuple):
            return obj, 1
        done = self._done.get(id(obj))
        if done is not None:
            return done
        size = 1
        rebuilt: Any
        if isinstance(obj, TFNetworkRecord):
            obj.state, size = self._walk_child(obj.state, depth, size)
            rebuilt = obj
        elif isinstance(obj, dict):
            rebuilt = {}
            for key, value in obj.items():
                rebuilt[key], size = self._walk_child(value, depth, size)
        else:
            items = []
            for value in obj:
                item, size = self._walk_child(value, depth, size)
                items.append(item)
            rebuilt = items if isinstance(obj, list) else tuple(items)
        self._done[id(obj)] = (rebuilt, size)
        self._keep.append(obj)
        return rebuilt, size

    def _walk_child(self, value: Any, depth: int, size: int) -> tuple[Any, int]:
        item, item_size = self._walk(value, depth - 1)
        size += item_size
        if size > self._limits.max_elements:
            raise FormatError(
                f"a value expands to more than {self._limits.max_elements} elements "
                "(shared references counted each time they are used: a reference bomb)"
            )
        return item, size


_U = TypeVar("_U", bound=pickle.Unpickler)


def _scanned(f: io.BytesIO, limits: ReadLimits, unpickler: _U) -> _U:
    """`unpickler` (reading `f`) once the pickle at `f`'s position has passed `scan_pickle`: the C
    unpickler hashes dict keys itself, so a tuple-tree key would cost 2^depth inside `load()`."""
    start = f.tell()
    try:
        scan_pickle(f, limits)
    except FormatError as exc:
        raise FormatError(f"nested torch archive: {exc}") from exc
    f.seek(start)
    return unpickler


# Real files have one header for all their storages; the bound keeps a file of many different headers
# from making each lookup a long scan.
_MAX_GOOD_HEADERS = 4


def _read_legacy_header(f: io.BytesIO, limits: ReadLimits) -> None:
    """The magic number, protocol version and sys-info pickles at the start of a legacy archive."""
    if _scanned(f, limits, _DataOnlyUnpickler(f)).load() != _LEGACY_MAGIC:
        raise FormatError("nested torch archive has a wrong magic number")
    if _scanned(f, limits, _DataOnlyUnpickler(f)).load() != _LEGACY_PROTOCOL:
        raise FormatError("nested torch archive has an unknown protocol version")
    sys_info = _scanned(f, limits, _DataOnlyUnpickler(f)).load()
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise FormatError("nested torch archive is not little-endian")


def read_legacy_storage(
    data: bytes, limits: ReadLimits = DEFAULT_LIMITS, good_headers: set[bytes] | None = None
) -> _Storage:
    """Parse a nested legacy `torch.save(storage)` archive without `torch.load`.

    Layout (torch `serialization._legacy_save`): pickles of the magic number, the protocol version and a
    sys-info dict, then the object pickle (a persistent id per storage), then the list of storage keys,
    then per key an int64 element count and the raw little-endian bytes.

    `good_headers`: the exact bytes of headers (the first three pickles) already read and accepted in
    this file, added to as we go. Every storage of a file starts with the same header, and reading it
    again cost 0.18 s of a 1024 px load (450 storages); identical bytes unpickle to the same values.
    """
    f = io.BytesIO(data)
    try:
        known = next((h for h in good_headers or () if data.startswith(h)), None)
        if known is not None:
            f.seek(len(known))
        else:
            _read_legacy_header(f, limits)
            if good_headers is not None and len(good_headers) < _MAX_GOOD_HEADERS:
                good_headers.add(data[: f.tell()])
        objects = _LegacyArchiveUnpickler(f, limits)
        root = _scanned(f, limits, objects).load()
        keys = _scanned(f, limits, _DataOnlyUnpickler(f)).load()
    except GanError:
        raise
    except Exception as exc:
        raise FormatError(f"damaged nested torch archive: {type(exc).__name__}: {exc}") from exc
    if not isinstance(root, _StorageRef):
        raise FormatError("nested torch archive does not hold a single storage")
    if not isinstance(keys, list) or len(keys) != len(objects.refs) or set(keys) != set(objects.refs):
        raise FormatError("nested torch archive's storage keys do not match its objects")
    flats: dict[str, torch.Tensor] = {}
    pos = f.tell()
    for key in keys:
        ref = objects.refs[key]
        head = data[pos : pos + 8]
        if len(head) != 8 or int.from_bytes(head, "little", signed=True) != ref.numel:
            raise FormatError("nested torch archive's storage size does not match its declaration")
        pos += 8
        nbytes = ref.numel * ref.dtype.itemsize
        if pos + nbytes > len(data):
            raise FormatError(f"nested torch archive is truncated ({len(data) - pos} of {nbytes} bytes)")
        flats[key] = _read_only_view(data, pos, ref.dtype, ref.numel)
        pos += nbytes
    if pos != len(data):
        raise FormatError("nested torch archive has trailing bytes")
    return _Storage(flats[root.key])


def _read_only_view(data: bytes, offset: int, dtype: torch.dtype, numel: int) -> torch.Tensor:
    """The storage's elements as a tensor over `data` itself, not a copy.

    A file holds G, D and G_ema, and sampling needs G_ema alone: copying every storage here cost 0.2 s
    of a 1024 px load, and 250 MB for the networks that are then dropped. The view must
    not be written (`data` is an immutable bytes object); `PersistentRecord.state_dict` copies the
    tensors of the networks actually built.
    """
    if not numel:
        return torch.empty(0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        return torch.frombuffer(data, dtype=dtype, count=numel, offset=offset)


def read_bytes_bounded(path_or_file: str | os.PathLike[str] | IO[bytes], limits: ReadLimits) -> bytes:
    """The whole file, refusing one larger than the limit before reading it.

    Parsing from memory also means a declared length (BINBYTES8 of 2^60) can only run into the end of
    the buffer, never make the reader allocate what the file claims.
    """
    if isinstance(path_or_file, str | os.PathLike):
        size = os.path.getsize(path_or_file)
        if size > limits.max_file_bytes:
            raise FormatError(f"file is {size} bytes, more than the limit of {limits.max_file_bytes}")
        with open(path_or_file, "rb") as fh:
            return fh.read()
    data = path_or_file.read(limits.max_file_bytes + 1)
    if len(data) > limits.max_file_bytes:
        raise FormatError(f"file is larger than the limit of {limits.max_file_bytes} bytes")
    return bytes(data)


def safe_loads(data: bytes, limits: ReadLimits = DEFAULT_LIMITS) -> Any:
    """Unpickle `data` with the allowlist; any damage is a `FormatError`, any refusal an
    `UnsafePickleError`; no other exception escapes."""
    if not data:
        raise FormatError("file is empty")
    # Counted before anything is built: the C unpickler hashes dict keys and set items as it goes.
    scan_pickle(data, limits)
    unpickler = SafeUnpickler(io.BytesIO(data), limits)
    try:
        obj = unpickler.load()
    except GanError:
        raise
    except RecursionError as exc:
        raise FormatError("pickle nests too deeply") from exc
    except MemoryError:
        raise  # the reader's memory cap, not a damaged file: the import child reports it as such
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, TypeError, ...
        raise FormatError(f"not a readable pickle: {type(exc).__name__}: {exc}") from exc
    finally:
        # The allowlist holds bound methods, a reference cycle through the unpickler, which would keep
        # its input (the whole file) and memo alive until the cyclic GC ran: 380 MB more resident
        # during a 1024 px load than needed.
        unpickler.release()
    return unpickler.resolver.resolve(obj)


def is_pickle(head: bytes) -> bool:
    """Protocol 2+ pickles start with PROTO; we do not sniff protocols 0-1, which no network file uses."""
    return len(head) >= 2 and head[0] == PICKLE_PROTOCOL_BYTE and 2 <= head[1] <= 5


__all__ = [
    "PERSISTENT_CLASSES",
    "PersistentRecord",
    "SafeUnpickler",
    "TFNetworkRecord",
    "read_bytes_bounded",
    "read_legacy_storage",
    "safe_loads",
]
