"""The hostile corpus: every file is refused (or read as inert data) and its canary never appears.

Each payload would create the canary file if any part of it ran; the control tests show that the
standard unpickler does run them, so a passing refusal test means something.
"""

from __future__ import annotations

import io
import pickle
import shlex
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from hostile import (
    PROTOCOLS,
    Reduce,
    fake_modules,
    legacy_archive,
    module_state,
    persistent,
    reduce_pickle,
    storage_bytes,
    write,
)

from gan.errors import FormatError, GanError, UnsafePickleError
from gan.io.limits import ReadLimits
from gan.io.official_pickle import PersistentRecord, read_official_pickle
from gan.io.safe_pickle import read_legacy_storage, safe_loads


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary"


def _touch(canary: Path) -> str:
    return f"touch {shlex.quote(str(canary))}"


def _open(canary: Path) -> str:
    return f"open({str(canary)!r}, 'w').close()"


def _refused(data: bytes, name: str, canary: Path) -> None:
    with pytest.raises(UnsafePickleError, match=f"refused global '{name}'"):
        safe_loads(data)
    assert not canary.exists()


# -- control: the payloads are live ------------------------------------------------------------------


def test_control_payloads_run_under_the_standard_unpickler(canary: Path) -> None:
    pickle.loads(reduce_pickle("posix", "system", (_touch(canary),), 2))
    assert canary.exists()
    canary.unlink()
    pickle.loads(reduce_pickle("builtins", "eval", (_open(canary),), 4))
    assert canary.exists()


# -- classic globals at every protocol ---------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("module", ["os", "posix", "nt"])
def test_system_refused(protocol: int, module: str, canary: Path) -> None:
    _refused(reduce_pickle(module, "system", (_touch(canary),), protocol), f"{module}.system", canary)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("module", ["builtins", "__builtin__"])
@pytest.mark.parametrize("name", ["eval", "exec", "getattr", "__import__", "open", "compile", "setattr"])
def test_builtins_refused(protocol: int, module: str, name: str, canary: Path) -> None:
    _refused(reduce_pickle(module, name, (_open(canary),), protocol), f"{module}.{name}", canary)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("module", "name", "make_args"),
    [
        ("subprocess", "Popen", lambda c: (["touch", str(c)],)),
        ("subprocess", "check_call", lambda c: (["touch", str(c)],)),
        ("marshal", "loads", lambda c: (compile(f"open({str(c)!r}, 'w')", "x", "exec").co_code,)),
        ("types", "FunctionType", lambda c: (None, {})),
        ("pickle", "loads", lambda c: (reduce_pickle("posix", "system", (f"touch {c}",), 2),)),
        ("_pickle", "loads", lambda c: (reduce_pickle("posix", "system", (f"touch {c}",), 2),)),
        ("copyreg", "_reconstructor", lambda c: (None, None, None)),
        ("numpy.testing._private.utils", "runstring", lambda c: (f"open({str(c)!r}, 'w')", {})),
        ("numpy.lib.utils", "safe_eval", lambda c: ("1",)),
        ("numpy", "load", lambda c: ("x.npy",)),
        ("numpy.core.multiarray", "_reconstruct_evil", lambda c: ()),
        ("dnnlib.util", "call_func_by_name", lambda c: ("touch",)),
        ("dnnlib.util", "construct_class_by_name", lambda c: ()),
        ("dnnlib.util", "get_obj_by_name", lambda c: ("os.system",)),
        ("torch", "load", lambda c: ("x.pt",)),
        ("torch.serialization", "load", lambda c: ("x.pt",)),
        ("torch._utils", "_rebuild_from_type_v2", lambda c: ()),
        ("torch.storage", "_load_from_bytes_evil", lambda c: ()),
        ("training.dataset", "ImageFolderDataset", lambda c: ("data.zip",)),
        ("torch_utils.persistence", "import_hook", lambda c: ()),
    ],
)
def test_other_dangerous_globals_refused(
    protocol: int, module: str, name: str, make_args, canary: Path
) -> None:
    _refused(reduce_pickle(module, name, make_args(canary), protocol), f"{module}.{name}", canary)


def test_call_func_by_name_with_kwargs_refused(canary: Path) -> None:
    with fake_modules() as mods:
        payload = Reduce(mods["dnnlib.util"].call_func_by_name, _touch(canary))
        data = pickle.dumps({"G_ema": payload}, protocol=4)
    _refused(data, "dnnlib.util.call_func_by_name", canary)


def test_a_refused_global_deep_inside_a_valid_file(canary: Path) -> None:
    with fake_modules() as mods:
        evil = Reduce(eval, _open(canary))
        state = module_state({"weight": torch.zeros(2, 2)}, evil_attribute=evil)
        data = pickle.dumps({"G_ema": persistent(mods, "FullyConnectedLayer", state)}, protocol=3)
    _refused(data, "builtins.eval", canary)


# -- nested torch archives inside torch.storage._load_from_bytes ---------------------------------------


def _tensor_from_archive(archive: bytes, numel: int) -> bytes:
    storage = Reduce(torch.storage._load_from_bytes, archive)
    return pickle.dumps(
        Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (numel,), (1,), False, OrderedDict()), 4
    )


def test_nested_archive_with_a_system_reduce_refused(canary: Path) -> None:
    evil_object = reduce_pickle("posix", "system", (_touch(canary),), 2)
    archive = legacy_archive(evil_object, ["0"], b"")
    data = _tensor_from_archive(archive, 0)
    with pytest.raises(UnsafePickleError, match="refused global 'posix.system' in a nested torch archive"):
        safe_loads(data)
    assert not canary.exists()
    # the standard loader the official code uses would have run it
    with pytest.raises(Exception):  # noqa: B017 - torch fails after running the payload
        torch.load(io.BytesIO(archive), weights_only=False)
    assert canary.exists()


def test_nested_archive_with_a_reduce_in_its_header_refused(canary: Path) -> None:
    archive = b"".join(
        [
            pickle.dumps(0x1950A86A20F9469CFC6C, 2),
            pickle.dumps(1001, 2),
            reduce_pickle("builtins", "exec", (_open(canary),), 2),
        ]
    )
    with pytest.raises(UnsafePickleError, match="refused global 'builtins.exec' in a nested torch archive"):
        safe_loads(_tensor_from_archive(archive, 0))
    assert not canary.exists()


def test_nested_archive_persistent_module_source_refused(canary: Path) -> None:
    # a legacy archive may name a module class and its source as a persistent id; torch.load checks it
    pid = ("module", "torch.nn.Linear", "linear.py", f"open({str(canary)!r}, 'w')")
    obj = b"\x80\x02" + pickle.dumps(pid, 2)[2:-1] + b"Q."
    with pytest.raises(UnsafePickleError, match="refused persistent id"):
        read_legacy_storage(legacy_archive(obj, [], b""))
    assert not canary.exists()


def test_nested_zip_archive_is_a_format_error() -> None:
    buf = io.BytesIO()
    torch.save(torch.zeros(3).untyped_storage(), buf)  # zip format, which the official files never hold
    with pytest.raises(FormatError):
        read_legacy_storage(buf.getvalue())


def test_nested_archive_declaring_a_huge_storage(canary: Path) -> None:
    # persistent id ('storage', torch.FloatStorage, '0', 'cpu', 2**40, None), written by hand
    obj = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
    obj += b"\x8a\x06" + (1 << 40).to_bytes(6, "little") + b"Ntq\x00Q."
    with pytest.raises(FormatError, match="storage elements"):
        read_legacy_storage(legacy_archive(obj, ["0"], b"\x00" * 16))


def test_nested_archive_shorter_than_declared() -> None:
    good = storage_bytes(torch.arange(8.0))
    with pytest.raises(FormatError, match="truncated"):
        read_legacy_storage(good[:-4])
    assert torch.equal(read_legacy_storage(good).flat, torch.arange(8.0))


# -- persistent records ----------------------------------------------------------------------------------


def test_module_src_is_never_executed(canary: Path, tmp_path: Path) -> None:
    src = f"open({str(canary)!r}, 'w').close()\nimport os\nos.system('touch {canary}')\n"
    with fake_modules() as mods:
        record = persistent(mods, "FullyConnectedLayer", module_state({"weight": torch.ones(2, 3)}), src)
        data = pickle.dumps({"G_ema": record}, protocol=4)
    out = read_official_pickle(write(tmp_path / "src.pkl", data))
    assert isinstance(out["G_ema"], PersistentRecord)
    assert torch.equal(out["G_ema"].parameters["weight"], torch.ones(2, 3))
    assert not canary.exists()


def test_unknown_class_name_refused(canary: Path) -> None:
    with fake_modules() as mods:
        data = pickle.dumps({"G_ema": persistent(mods, "EvilLayer", module_state())}, protocol=4)
    with pytest.raises(UnsafePickleError, match="refused persistent class 'EvilLayer'"):
        safe_loads(data)
    assert not canary.exists()


def test_child_that_is_not_a_record_is_a_format_error() -> None:
    with fake_modules() as mods:
        state = module_state(_modules=OrderedDict(fc=OrderedDict(weight=1)))
        data = pickle.dumps({"G_ema": persistent(mods, "MappingNetwork", state)}, protocol=4)
    with pytest.raises(FormatError, match="not a network module"):
        safe_loads(data)


# -- tensors that lie about their size --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "size", "stride"),
    [
        (0, (5,), (1,)),  # one past the end
        (3, (2,), (1,)),  # offset pushes it out
        (0, (2, 2), (3, 1)),  # stride walks out
        (0, (1 << 20, 1 << 20), (0, 0)),  # 2^40 elements on a 4-element storage
        (-1, (1,), (1,)),
        (0, (2,), (-1,)),
        (0, (2, 2), (1,)),
        (0, (-2,), (1,)),
        (0, (1,) * 40, (1,) * 40),
    ],
)
def test_tensor_overrunning_its_storage(offset: int, size: tuple, stride: tuple) -> None:
    storage = Reduce(torch.storage._load_from_bytes, storage_bytes(torch.arange(4.0)))
    data = pickle.dumps(
        Reduce(torch._utils._rebuild_tensor_v2, storage, offset, size, stride, False, OrderedDict()), 4
    )
    with pytest.raises(FormatError):
        safe_loads(data)


def test_honest_tensor_views_are_read() -> None:
    storage = Reduce(torch.storage._load_from_bytes, storage_bytes(torch.arange(6.0)))
    data = pickle.dumps(
        Reduce(torch._utils._rebuild_tensor_v2, storage, 1, (2, 2), (2, 1), False, OrderedDict()), 4
    )
    assert torch.equal(safe_loads(data), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))


def test_pickled_torch_tensors_round_trip() -> None:
    value = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.ones(2, dtype=torch.float16)}
    out = safe_loads(pickle.dumps(value, protocol=3))
    assert all(torch.equal(out[k], v) and out[k].dtype == v.dtype for k, v in value.items())


# -- damaged and oversized files --------------------------------------------------------------------------


FIXTURE = next(
    iter(
        sorted(
            (Path(__file__).resolve().parents[3].parent / "shared/fixtures/official").glob("sg*/network.pkl")
        )
    ),
    None,
)


@pytest.mark.skipif(FIXTURE is None, reason="no official fixture")
@pytest.mark.parametrize("fraction", [0.0001, 0.3, 0.5, 0.9999])
def test_truncated_file(fraction: float, tmp_path: Path) -> None:
    data = FIXTURE.read_bytes()  # type: ignore[union-attr]
    with pytest.raises(FormatError):
        read_official_pickle(write(tmp_path / "cut.pkl", data[: int(len(data) * fraction)]))


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 64, b"PK\x03\x04garbage", b"\x80\x05\x95", b"\x80\x04(((((", b"not a pickle at all"],
)
def test_garbage_is_a_format_error(data: bytes, tmp_path: Path) -> None:
    with pytest.raises(GanError):
        read_official_pickle(write(tmp_path / "junk.pkl", data))


def test_huge_declared_bytes_length() -> None:
    # BINBYTES8 declaring 2^60 bytes: parsed from memory, so it can only hit the end of the buffer
    data = b"\x80\x05\x8e" + (1 << 60).to_bytes(8, "little") + b"abc."
    with pytest.raises(FormatError):
        safe_loads(data)


def test_file_larger_than_the_limit(tmp_path: Path) -> None:
    path = write(tmp_path / "big.pkl", pickle.dumps({"x": b"\x00" * 4096}, 4))
    with pytest.raises(FormatError, match="limit"):
        read_official_pickle(path, ReadLimits(max_file_bytes=1024))


def test_too_many_tensors() -> None:
    data = pickle.dumps([torch.zeros(1) for _ in range(20)], 4)
    with pytest.raises(FormatError, match="more than 10 tensors"):
        safe_loads(data, ReadLimits(max_tensors=10))


def test_tensor_over_the_element_limit() -> None:
    data = pickle.dumps(torch.zeros(100), 4)
    with pytest.raises(FormatError, match="elements"):
        safe_loads(data, ReadLimits(max_tensor_numel=50))


def test_deep_nesting_is_a_format_error() -> None:
    value: list = []
    for _ in range(200):
        value = [value]
    with pytest.raises(FormatError, match="nested"):
        safe_loads(pickle.dumps(value, 4))


def test_out_of_band_buffer_is_a_format_error() -> None:
    data = b"\x80\x05\x97."  # NEXT_BUFFER with no buffers given
    with pytest.raises(FormatError):
        safe_loads(data)


def test_object_dtype_numpy_array_refused() -> None:
    import numpy as np

    data = pickle.dumps(np.array([1, "x"], dtype=object), 2)
    with pytest.raises(FormatError, match="numpy dtype 'O8'"):
        safe_loads(data)


def test_a_header_already_read_is_skipped_only_when_byte_identical() -> None:
    good = storage_bytes(torch.arange(8.0))
    headers: set[bytes] = set()
    assert torch.equal(read_legacy_storage(good, good_headers=headers).flat, torch.arange(8.0))
    (header,) = headers
    assert good.startswith(header) and len(header) < 200  # the three small header pickles
    assert torch.equal(read_legacy_storage(good, good_headers=headers).flat, torch.arange(8.0))
    # a later archive whose header differs from the accepted one is read (and refused) in full
    big_endian = good.replace(b"little_endianq\x02\x88", b"little_endianq\x02\x89")  # True -> False
    assert big_endian != good
    with pytest.raises(FormatError, match="not little-endian"):
        read_legacy_storage(big_endian, good_headers=headers)
    assert headers == {header}


def test_record_tensors_are_views_and_state_dict_copies(tmp_path: Path) -> None:
    with fake_modules() as mods:
        record = persistent(mods, "FullyConnectedLayer", module_state({"weight": torch.ones(2, 3)}))
        data = pickle.dumps({"G_ema": record}, protocol=4)
    out = read_official_pickle(write(tmp_path / "views.pkl", data))["G_ema"]
    state = out.state_dict()
    state["weight"].add_(1)  # a copy: writable, and the record's view is untouched
    assert torch.equal(out.parameters["weight"], torch.ones(2, 3))
    assert (
        state["weight"].untyped_storage().data_ptr() != out.parameters["weight"].untyped_storage().data_ptr()
    )
