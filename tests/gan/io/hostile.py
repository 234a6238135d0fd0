"""Builders for the hostile-pickle corpus: each payload would create `canary` if anything ran it."""

from __future__ import annotations

import io
import pickle
import sys
import types
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

PROTOCOLS = (0, 1, 2, 3, 4, 5)


def _short_unicode(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def reduce_pickle(module: str, name: str, args: tuple[Any, ...], protocol: int) -> bytes:
    """`module.name(*args)` as one GLOBAL/STACK_GLOBAL + REDUCE, at the given protocol."""
    body = pickle.dumps(args, protocol=protocol)
    if protocol >= 2:
        body = body[2:]  # PROTO
    if protocol >= 4 and body[:1] == b"\x95":
        body = body[9:]  # FRAME
    body = body[:-1]  # STOP
    if protocol >= 4:
        ref = _short_unicode(module) + _short_unicode(name) + b"\x93"
    else:
        ref = b"c" + module.encode() + b"\n" + name.encode() + b"\n"
    head = b"\x80" + bytes([protocol]) if protocol >= 2 else b""
    return head + ref + body + b"R."


def legacy_archive(object_pickle: bytes, keys: list[str], raw: bytes, *, sys_info: Any = None) -> bytes:
    """A legacy `torch.save` archive around a hand-made object pickle (see torch `_legacy_save`)."""
    magic = 0x1950A86A20F9469CFC6C
    info = sys_info if sys_info is not None else {"protocol_version": 1001, "little_endian": True}
    parts = [pickle.dumps(magic, 2), pickle.dumps(1001, 2), pickle.dumps(info, 2), object_pickle]
    parts.append(pickle.dumps(keys, 2))
    return b"".join(parts) + raw


def storage_bytes(values: torch.Tensor) -> bytes:
    """The bytes `torch.storage._load_from_bytes` receives for a float32 storage."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # TypedStorage is deprecated, but it is what tensors pickle
        warnings.simplefilter("ignore", UserWarning)
        storage = values.float().contiguous().storage()
    torch.save(storage, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


class Reduce:
    """Pickles as `fn(*args)`; `fn` must be importable under its own name (see `fake_modules`)."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.fn, self.args


@contextmanager
def fake_modules() -> Iterator[dict[str, types.ModuleType]]:
    """Stand-ins for NVIDIA's `torch_utils.persistence` and `dnnlib.util`, so that the standard
    pickler writes their global names; they hold inert functions and are removed afterwards."""

    def _reconstruct_persistent_obj(meta: Any) -> Any:  # never called by our reader
        raise AssertionError("the real persistence loader must never run")

    def call_func_by_name(*args: Any, func_name: str | None = None, **kwargs: Any) -> Any:
        raise AssertionError("never called")

    persistence = types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj  # type: ignore[attr-defined]
    util = types.ModuleType("dnnlib.util")
    call_func_by_name.__module__ = "dnnlib.util"
    call_func_by_name.__qualname__ = "call_func_by_name"
    util.call_func_by_name = call_func_by_name  # type: ignore[attr-defined]
    util.EasyDict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})  # type: ignore[attr-defined]
    mods = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
    }
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        yield mods
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def module_state(parameters: dict[str, torch.Tensor] | None = None, **extra: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "training": False,
        "_parameters": OrderedDict((k, torch.nn.Parameter(v, False)) for k, v in (parameters or {}).items()),
        "_buffers": OrderedDict(),
        "_non_persistent_buffers_set": set(),
        "_forward_hooks": OrderedDict(),
        "_modules": OrderedDict(),
        "_init_args": (),
        "_init_kwargs": {},
    }
    state.update(extra)
    return state


def persistent(
    mods: dict[str, types.ModuleType], class_name: str, state: dict[str, Any], module_src: str = "# elided\n"
) -> Reduce:
    meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": class_name, "state": state}
    return Reduce(mods["torch_utils.persistence"]._reconstruct_persistent_obj, meta)  # type: ignore[attr-defined]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
