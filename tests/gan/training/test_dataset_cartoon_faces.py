"""scripts/make_cartoon_faces.py: deterministic by seed and readable as a training set."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from gan.training.dataset import ImageDataset

_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "make_cartoon_faces.py"
_spec = importlib.util.spec_from_file_location("make_cartoon_faces", _SCRIPT)
assert _spec is not None and _spec.loader is not None
faces = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(faces)


def test_faces_are_deterministic_and_train_ready(tmp_path: Path) -> None:
    faces.make_faces(tmp_path / "a.zip", 6, 32, seed=3)
    faces.make_faces(tmp_path / "b.zip", 4, 32, seed=3)
    faces.make_faces(tmp_path / "c.zip", 4, 32, seed=4)
    a, b, c = (ImageDataset(tmp_path / f"{n}.zip") for n in "abc")
    assert len(a) == 6 and a.resolution == 32 and a.num_channels == 3 and not a.has_labels
    for i in range(4):  # image i does not depend on how many were made
        np.testing.assert_array_equal(a[i][0], b[i][0])
    assert not np.array_equal(a[0][0], c[0][0])
    # Faces differ from each other and are not flat: a face sits on a background.
    stack = np.stack([a[i][0] for i in range(6)]).astype(float)
    assert stack.std(axis=0).mean() > 10
    assert all(stack[i].std() > 10 for i in range(6))


def test_folder_output(tmp_path: Path) -> None:
    faces.make_faces(tmp_path / "dir", 3, 32, seed=0)
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == [
        "face000000.png",
        "face000001.png",
        "face000002.png",
    ]
