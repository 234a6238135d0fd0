"""What a training run tells the outside world: the per-tick JSONL log, preview grids, and the callback.

The callback is how the worker follows a run: it receives every tick's stats, every
preview and every checkpoint, and a progress line every few seconds between ticks (a tick on a CPU can
last many minutes, and a user watching a job needs the speed and an ETA before the first one ends).
`should_stop()` is asked after every training step, so it must be cheap; returning True ends the run
within that step, after a final checkpoint. Callbacks run on rank 0 only.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image


@runtime_checkable
class TrainingCallback(Protocol):
    def on_tick(self, stats: dict[str, Any]) -> None: ...

    def on_progress(self, progress: dict[str, Any]) -> None: ...

    def on_preview(self, path: Path) -> None: ...

    def on_checkpoint(self, path: Path, kimg: float, metrics: dict[str, float]) -> None: ...

    def should_stop(self) -> bool: ...


class NullCallback:
    """The callback of a run nobody watches."""

    def on_tick(self, stats: dict[str, Any]) -> None:
        pass

    def on_progress(self, progress: dict[str, Any]) -> None:
        pass

    def on_preview(self, path: Path) -> None:
        pass

    def on_checkpoint(self, path: Path, kimg: float, metrics: dict[str, float]) -> None:
        pass

    def should_stop(self) -> bool:
        return False


@dataclass
class StatAccumulator:
    """Means over a tick of the values the loss reports as (sum, count)."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, stats: dict[str, tuple[float, int]]) -> None:
        for name, (total, count) in stats.items():
            self.sums[name] = self.sums.get(name, 0.0) + total
            self.counts[name] = self.counts.get(name, 0) + count

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in sorted(self.sums) if self.counts[k] > 0}

    def clear(self) -> None:
        self.sums.clear()
        self.counts.clear()


class StatsLog:
    """`stats.jsonl`: one JSON object per tick, flushed at once so a killed run keeps every finished tick."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run)

    def write(self, stats: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in stats.items()}
        self._file.write(json.dumps(dict(clean, timestamp=time.time())) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_stats(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def progress_line(
    cur_nimg: int, total_nimg: int, tick: int, tick_start_nimg: int, tick_start_time: float, now: float
) -> dict[str, Any]:
    """Where a run stands between ticks: images seen, kimg, and the speed measured over the current tick
    (maintenance excluded, as the tick's `sec_per_kimg`), with the ETA it implies for the rest."""
    done_in_tick = cur_nimg - tick_start_nimg
    sec_per_kimg = (now - tick_start_time) / done_in_tick * 1e3 if done_in_tick > 0 else 0.0
    remaining_kimg = max(total_nimg - cur_nimg, 0) / 1e3
    return {
        "tick": tick,
        "images_seen": cur_nimg,
        "kimg": cur_nimg / 1e3,
        "total_kimg": total_nimg / 1e3,
        "progress": min(cur_nimg / total_nimg, 1.0) if total_nimg else 1.0,
        "sec_per_kimg": sec_per_kimg,
        # Snapshots (previews, checkpoints, metrics) come on top; on a CPU they are a few percent.
        "eta_seconds": remaining_kimg * sec_per_kimg,
    }


# Preview grids ------------------------------------------------------------------------------------


def grid_shape(resolution: int, count_limit: int | None = None) -> tuple[int, int]:
    """(columns, rows). Official grid: about 7680x4320 px, 7-32 columns and 4-32 rows.

    When `count_limit` is smaller than that grid, the grid is near-square instead: floor(sqrt(n)) rows of
    n // rows columns, so columns exceed rows by at most 2 and fewer than sqrt(n) images are dropped (32
    gives 6x5). Capping the official shape column-first gave 32x1 strips for small images.
    """
    gw = int(np.clip(7680 // resolution, 7, 32))
    gh = int(np.clip(4320 // resolution, 4, 32))
    if count_limit is not None and count_limit < gw * gh:
        if count_limit < 1:
            raise ValueError(f"count_limit must be >= 1, got {count_limit}")
        gh = math.isqrt(count_limit)
        gw = count_limit // gh
    return gw, gh


def image_grid(images: np.ndarray, grid: tuple[int, int], drange: Sequence[float]) -> np.ndarray:
    """[N, C, H, W] floats in `drange` -> one [gh*H, gw*W, C] uint8 image, row-major."""
    gw, gh = grid
    assert images.ndim == 4 and images.shape[0] == gw * gh, (images.shape, grid)
    lo, hi = drange
    img = (np.asarray(images, dtype=np.float32) - lo) * (255 / (hi - lo))
    img = np.rint(img).clip(0, 255).astype(np.uint8)
    _, C, H, W = img.shape
    img = img.reshape(gh, gw, C, H, W).transpose(0, 3, 1, 4, 2).reshape(gh * H, gw * W, C)
    return np.asarray(img)


def save_image_grid(images: np.ndarray, path: Path, grid: tuple[int, int], drange: Sequence[float]) -> Path:
    img = image_grid(images, grid, drange)
    mode = {1: "L", 3: "RGB"}.get(img.shape[2])
    if mode is None:
        raise ValueError(f"cannot write a {img.shape[2]}-channel grid as PNG")
    Image.fromarray(img[:, :, 0] if mode == "L" else img, mode).save(path)
    return Path(path)
