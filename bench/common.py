"""What both benches share: the environment record, paired timing, and peak memory on CPU and CUDA.

Timing is paired: each round times ours and the official code back to back (alternating which goes
first), and the ratio is taken per round before the median. On a shared machine the load changes from
second to second; a paired ratio cancels most of that, where a ratio of two separate medians would not.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Side = Callable[[], None]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment(device: torch.device) -> dict[str, Any]:
    """Device, date and software versions: the context every recorded figure needs."""
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = props.name
        env["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def parse_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Side, device: torch.device, calls: int) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / calls


class _RssSampler:
    """Peak resident set size while a call runs. ru_maxrss is a process-lifetime peak, useless for two
    networks in one process, so we poll /proc/self/statm from a thread (torch ops release the GIL)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> _RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _release_freed_heap() -> None:
    """glibc keeps freed small blocks in its arenas, where a later call reuses them without the RSS
    moving; trimming first makes the RSS rise measure what the call needs, not what earlier calls left."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the figure is then a lower bound
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_memory(fn: Side, device: torch.device) -> dict[str, Any]:
    """CUDA: torch.cuda.max_memory_allocated over one call (weights included, as the reference figures).
    CPU: the rise of the resident set over one call above what was resident before it (weights excluded)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return {"kind": "cuda_max_allocated", "bytes": int(torch.cuda.max_memory_allocated(device))}
    _release_freed_heap()
    sampler = _RssSampler()
    with sampler:
        base = sampler.peak
        fn()
    return {"kind": "cpu_rss_increase", "bytes": int(sampler.peak - base)}


@dataclass
class PairedTiming:
    ours_s: list[float]  # seconds per call, one per round
    official_s: list[float]

    @property
    def ratios(self) -> list[float]:
        return [o / r for o, r in zip(self.ours_s, self.official_s, strict=True)]

    @property
    def ratio(self) -> float:
        """Median over rounds of ours / official time: < 1 means ours is faster."""
        return statistics.median(self.ratios)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ours_s_per_call": self.ours_s,
            "official_s_per_call": self.official_s,
            "ours_median_s": statistics.median(self.ours_s),
            "official_median_s": statistics.median(self.official_s),
            "time_ratio_ours_over_official": self.ratio,
            "time_ratio_per_round": self.ratios,
        }


def paired_timing(
    ours: Side, official: Side, device: torch.device, warmup: int, rounds: int, calls: int
) -> PairedTiming:
    """Warm both up (cudnn autotuning, allocator caches, lazy init), then `rounds` paired rounds."""
    for _ in range(warmup):
        ours()
        official()
    synchronize(device)
    ours_s, official_s = [], []
    for r in range(rounds):
        order = [("ours", ours), ("official", official)]
        if r % 2:
            order.reverse()
        for name, fn in order:
            (ours_s if name == "ours" else official_s).append(seconds_per_call(fn, device, calls))
    return PairedTiming(ours_s, official_s)


def fmt_ratio(result: dict[str, Any]) -> str:
    """The median paired ratio and, in brackets, the lowest and highest round: the noise band."""
    per_round = result["time_ratio_per_round"]
    return f"{result['time_ratio_ours_over_official']:.2f} [{min(per_round):.2f}-{max(per_round):.2f}]"


def fmt_bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"
