"""Generators kept loaded in an inference worker, least recently used dropped first.

A model is identified by its storage key (`models/<sha256>.safetensors`): the key names the bytes, so a
cached generator never goes stale. Loading a 1024 px generator takes seconds (reading ~120 MB and
building the modules), sampling it tens of milliseconds, so a sampling service that reloaded per
request would spend nearly all its time loading. The cache is bounded twice, by count and by the bytes
of the weights, because one 1024 px StyleGAN3 (~100 MB fp32) weighs as much as a dozen small models.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from gan.errors import GanError
from gan.io.checkpoint import load_generator
from gan.sampling import Sampler
from worker.devices import device_for
from worker.settings import Settings
from worker.storage import Storage, make_storage


class ModelFileMissing(GanError):
    """The model's row names a file that storage does not have (deleted meanwhile)."""


@dataclass(frozen=True)
class LoadedModel:
    file_key: str
    sampler: Sampler
    size_bytes: int


def weights_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


class ModelCache:
    """A bounded LRU of samplers; `get` loads on a miss, once, however many threads ask at the same time."""

    def __init__(self, storage: Storage, device: torch.device, max_models: int, max_bytes: int) -> None:
        if max_models < 1 or max_bytes < 1:
            raise ValueError(f"cache bounds must be positive, got {max_models} models, {max_bytes} bytes")
        self.storage = storage
        self.device = device
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        # One lock per key being loaded, so that two requests for one cold model load it once while
        # requests for other (cached) models go on.
        self._loading: dict[str, threading.Lock] = {}
        self.loads = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._loaded)

    def keys(self) -> list[str]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._loaded)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(m.size_bytes for m in self._loaded.values())

    def get(self, file_key: str) -> LoadedModel:
        with self._lock:
            hit = self._loaded.get(file_key)
            if hit is not None:
                self._loaded.move_to_end(file_key)
                return hit
            key_lock = self._loading.setdefault(file_key, threading.Lock())
        with key_lock:
            with self._lock:
                hit = self._loaded.get(file_key)
                if hit is not None:  # another thread loaded it while we waited
                    self._loaded.move_to_end(file_key)
                    return hit
            loaded = self._load(file_key)
            with self._lock:
                self._loaded[file_key] = loaded
                self._evict()
                self._loading.pop(file_key, None)
                self.loads += 1
            return loaded

    def _load(self, file_key: str) -> LoadedModel:
        try:
            path = self.storage.local_path(file_key)
        except FileNotFoundError:
            raise ModelFileMissing(f"the model file {file_key!r} is missing from storage") from None
        if path is None:  # every backend gives a path today (S3 through its cache); a future one may not
            raise ModelFileMissing(f"storage cannot give a local file for {file_key!r}")
        G = load_generator(path, device=self.device)
        return LoadedModel(file_key, Sampler(G, device=self.device), weights_bytes(G))

    def _evict(self) -> None:
        # Keep the newest entry even when it alone is over the byte bound: it is in use right now.
        total = sum(m.size_bytes for m in self._loaded.values())
        while len(self._loaded) > 1 and (len(self._loaded) > self.max_models or total > self.max_bytes):
            _, dropped = self._loaded.popitem(last=False)
            total -= dropped.size_bytes


@functools.cache
def shared_cache(settings: Settings) -> ModelCache:
    """The one cache of this worker process (Settings is frozen, hence hashable)."""
    return ModelCache(
        make_storage(settings),
        device_for(settings, "inference"),  # the one device rule (worker/devices.py)
        settings.inference_cache_models,
        settings.inference_cache_bytes,
    )
