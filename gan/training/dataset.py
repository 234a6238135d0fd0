"""Training sets: `prepare_dataset` writes one (see dataset_prepare.py), `ImageDataset` reads one.

The reader follows the official `training/dataset.py` semantics so that a set prepared by NVIDIA's
`dataset_tool.py` trains the same here: images are every file with an image extension, sorted by name;
labels come from `dataset.json` (`{"labels": [[name, class_index | vector], ...] | null}`); `max_size`
keeps a random subset drawn with `np.random.RandomState(random_seed)` (before x-flip), and `xflip`
doubles the set with mirrored copies (after `max_size`).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np
import PIL.Image

from gan.errors import FormatError
from gan.training.dataset_prepare import (
    TRANSFORMS,
    NoUsableImagesError,
    PrepareLimits,
    PrepareReport,
    Rejection,
    Transform,
    prepare_dataset,
    to_rgb,
)

__all__ = [
    "TRANSFORMS",
    "ImageDataset",
    "NoUsableImagesError",
    "PrepareLimits",
    "PrepareReport",
    "Rejection",
    "Transform",
    "prepare_dataset",
    "to_rgb",
]


def _is_image_name(name: str) -> bool:
    PIL.Image.init()
    return os.path.splitext(name)[1].lower() in PIL.Image.EXTENSION


class ImageDataset:
    """A prepared set (zip or folder) as uint8 CHW arrays and float32 one-hot (or vector) labels.

    Indexing returns `(image [C, H, W] uint8, label [label_dim] float32)`. Safe to hand to a
    `torch.utils.data.DataLoader` with workers: the zip handle is opened lazily in each process.
    """

    def __init__(
        self,
        path: Path | str,
        resolution: int | None = None,
        use_labels: bool = False,
        xflip: bool = False,
        max_size: int | None = None,
        random_seed: int = 0,
    ) -> None:
        self.path = Path(path)
        self._zipfile: zipfile.ZipFile | None = None
        if self.path.is_dir():
            self._type = "dir"
            names = {p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()}
        elif self.path.is_file() and zipfile.is_zipfile(self.path):
            self._type = "zip"
            names = set(self._zip().namelist())
        elif self.path.exists():
            raise FormatError(f"{self.path} is neither a folder nor a zip")
        else:
            raise FileNotFoundError(2, "No such file or directory", str(self.path))
        self._all_names = names
        self._image_names = sorted(n for n in names if _is_image_name(n))
        if not self._image_names:
            raise FormatError(f"no image files in {self.path}")
        first = self._load_raw_image(0)
        self.image_shape: list[int] = list(first.shape)  # [C, H, W]
        if self.image_shape[1] != self.image_shape[2]:
            raise FormatError(
                f"images must be square, {self._image_names[0]} is {self.image_shape[2]}x{self.image_shape[1]}"
            )
        if resolution is not None and self.image_shape[1] != resolution:
            raise FormatError(f"images are {self.image_shape[1]} px, expected {resolution}")
        self.name = self.path.stem
        self._use_labels = use_labels
        self._raw_labels = self._load_raw_labels() if use_labels else None
        if self._raw_labels is None:
            self._raw_labels = np.zeros([len(self._image_names), 0], dtype=np.float32)

        # max_size before xflip, as official.
        self._raw_idx = np.arange(len(self._image_names), dtype=np.int64)
        if max_size is not None and self._raw_idx.size > max_size:
            np.random.RandomState(random_seed).shuffle(self._raw_idx)
            self._raw_idx = np.sort(self._raw_idx[:max_size])
        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

    # -- file access ------------------------------------------------------------------------------

    def _zip(self) -> zipfile.ZipFile:
        if self._zipfile is None:
            self._zipfile = zipfile.ZipFile(self.path)
        return self._zipfile

    def _open(self, name: str) -> IO[bytes]:
        if self._type == "dir":
            return open(self.path / name, "rb")
        return self._zip().open(name, "r")

    def close(self) -> None:
        if self._zipfile is not None:
            self._zipfile.close()
            self._zipfile = None

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _zipfile=None)

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        with self._open(self._image_names[raw_idx]) as f:
            image = np.array(PIL.Image.open(f))
        if image.ndim == 2:
            image = image[:, :, np.newaxis]  # HW => HWC
        if image.dtype != np.uint8:
            raise FormatError(
                f"{self._image_names[raw_idx]} is not 8-bit ({image.dtype}); prepare the set first"
            )
        return image.transpose(2, 0, 1)  # HWC => CHW

    def _load_raw_labels(self) -> np.ndarray | None:
        if "dataset.json" not in self._all_names:
            return None
        with self._open("dataset.json") as f:
            meta = json.load(f)
        labels = meta.get("labels") if isinstance(meta, dict) else None
        if labels is None:
            return None
        table = dict(labels)
        missing = [n for n in self._image_names if n not in table]
        if missing:
            raise FormatError(f"dataset.json has no label for {missing[0]} ({len(missing)} images unlabeled)")
        array = np.array([table[n] for n in self._image_names])
        if array.ndim == 1:
            array = array.astype(np.int64)
            if array.min() < 0:
                raise FormatError("dataset.json has a negative class index")
            return array
        return array.astype(np.float32)

    # -- the official Dataset interface -----------------------------------------------------------

    def __len__(self) -> int:
        return int(self._raw_idx.size)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        image = self._load_raw_image(int(self._raw_idx[idx]))
        if list(image.shape) != self.image_shape:
            raise FormatError(
                f"{self._image_names[self._raw_idx[idx]]} is {list(image.shape)}, the set is {self.image_shape}"
            )
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return image.copy(), self.get_label(idx)

    def get_label(self, idx: int) -> np.ndarray:
        assert self._raw_labels is not None
        label = self._raw_labels[self._raw_idx[idx]]
        if self._raw_labels.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            return onehot
        return np.array(label, dtype=np.float32)

    @property
    def label_shape(self) -> list[int]:
        assert self._raw_labels is not None
        if self._raw_labels.dtype == np.int64:
            return [int(self._raw_labels.max()) + 1]
        return list(self._raw_labels.shape[1:])

    @property
    def label_dim(self) -> int:
        return self.label_shape[0]

    @property
    def has_labels(self) -> bool:
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self) -> bool:
        assert self._raw_labels is not None
        return self._raw_labels.dtype == np.int64

    @property
    def num_channels(self) -> int:
        return self.image_shape[0]

    @property
    def resolution(self) -> int:
        return self.image_shape[1]

    @property
    def image_names(self) -> list[str]:
        return list(self._image_names)
