"""A person's own direction as an uploaded .npy (api/services/directions.py npy_vector): the numbers of
one vector come back; anything else is a 422 naming the file, decided from the header before any array
is made (a zip posing as .npy reached np.load's zip reader, a 500)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from api.errors import InvalidRequest
from api.services.directions import npy_vector


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def forged(header: str, payload: bytes = b"") -> bytes:
    """A version 1.0 .npy with this header dict text and payload."""
    text = header.encode("latin1")
    padding = 64 - (10 + len(text) + 1) % 64
    return (
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", len(text) + padding + 1)
        + text
        + b" " * padding
        + b"\n"
        + payload
    )


@pytest.mark.parametrize("shape", [(8,), (1, 8)])
def test_a_vector_comes_back(shape: tuple[int, ...]) -> None:
    vector = np.linspace(-1, 1, 8, dtype=np.float32).reshape(shape)
    assert npy_vector(npy(vector)) == pytest.approx(vector.reshape(-1).tolist())


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"PK\x03\x04" + b"\x00" * 40, "not a .npy"),  # a zip's magic: np.load would open it as .npz
        (b"not npy at all", "not a .npy"),
        (
            forged("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"),
            "more than the file holds",
        ),
        (forged("{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", b"\x00" * 8), "more than"),
        (forged("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\x00" * 8), "not a .npy"),
        (forged("{'descr': '<U4', 'fortran_order': False, 'shape': (1,), }", b"\x00" * 16), "not a number"),
        (forged("{'descr': '<f4', 'fortran_order': False, 'shape': (", b""), "not a .npy"),
        (npy(np.zeros((3, 4), dtype=np.float32)), "one vector"),
    ],
)
def test_anything_else_is_refused_naming_the_file(data: bytes, says: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        npy_vector(data)
    assert "body file" in str(refused.value) and says in str(refused.value), str(refused.value)
