"""The micro-batcher: concurrent sampling requests for one model share one forward pass.

Each request brings its ws ([num_ws, w_dim], mapped in the caller's thread: the mapping network is a
small MLP, the synthesis network is where the time goes) and what its synthesis needs. Requests that can
share a pass (same model, noise mode and StyleGAN3 transform) are grouped; one dispatcher thread takes the
oldest waiting request, waits until `max_wait_s` after its arrival or until `max_batch` compatible
requests are there, and runs them as one batch. Requests for other models wait their turn, oldest first,
so none starves.

One dispatcher per process also means one forward pass at a time on the device, which is what a single
GPU does anyway, and keeps `noise_mode="random"` (which seeds torch's global generator per image, see
`gan.sampling.Sampler`) free of races between threads.

The rows of a batch do not interact; batched pixels equal one-by-one pixels up to float32 summation
order (at most one grey level, measured in `gan.sampling.Sampler`'s docstring).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from gan.sampling import Sampler
from gan.vocabulary import NoiseMode


@dataclass(frozen=True)
class RenderResult:
    image: np.ndarray  # uint8 [H, W, C]
    batch_size: int  # rows in the forward pass this image came from
    # Where its time went (the service benchmark's breakdown): from `submit` to its pass starting (waiting
    # for companions and for the pass before), and the pass itself (all rows, pixels out as uint8).
    waited_s: float = 0.0
    synthesis_s: float = 0.0


@dataclass(frozen=True)
class SynthesisGroup:
    """What requests must share to go into one forward pass."""

    model_key: str
    noise_mode: NoiseMode
    translate: tuple[float, float] | None = None
    rotate: float | None = None


@dataclass
class _Pending:
    group: SynthesisGroup
    sampler: Sampler
    ws: torch.Tensor  # [num_ws, w_dim]
    noise_seed: int
    arrived: float
    future: Future[RenderResult] = field(default_factory=Future)


BatchObserver = Callable[[int], None]


class MicroBatcher:
    """Groups `submit`ted rows into forward passes of at most `max_batch` rows."""

    def __init__(self, max_batch: int, max_wait_s: float, observe: BatchObserver | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if not 0 <= max_wait_s <= 60:
            raise ValueError(f"max_wait_s must be in [0, 60], got {max_wait_s}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.observe = observe
        self._pending: list[_Pending] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._thread.start()

    def submit(
        self, group: SynthesisGroup, sampler: Sampler, ws: torch.Tensor, noise_seed: int = 0
    ) -> Future[RenderResult]:
        """Queue one row; the future gets its image and the size of the batch it was rendered in."""
        expected = (sampler.num_ws, sampler.config.w_dim)
        if tuple(ws.shape) != expected:
            raise ValueError(f"ws must be {list(expected)}, got {list(ws.shape)}")
        item = _Pending(group, sampler, ws, int(noise_seed), time.monotonic())
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._pending.append(item)
            self._cond.notify_all()
        return item.future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    # -- dispatcher ------------------------------------------------------------------------------------

    def _take_batch(self) -> list[_Pending] | None:
        """Block until a batch is due; remove it from the pending list and return it."""
        with self._cond:
            while True:
                if self._closed and not self._pending:
                    return None
                if not self._pending:
                    self._cond.wait()
                    continue
                first = self._pending[0]
                same = [p for p in self._pending if p.group == first.group][: self.max_batch]
                due = first.arrived + self.max_wait_s
                now = time.monotonic()
                if len(same) >= self.max_batch or now >= due or self._closed:
                    taken = {id(p) for p in same}
                    self._pending = [p for p in self._pending if id(p) not in taken]
                    return same
                self._cond.wait(timeout=due - now)

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            # A cancelled future (its caller gave up) needs no pixels.
            batch = [p for p in batch if p.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            started = time.monotonic()
            try:
                images = self._render(batch)
            except BaseException as exc:  # every waiting caller must hear of it, or it would hang
                for p in batch:
                    p.future.set_exception(exc)
                continue
            synthesis_s = time.monotonic() - started
            if self.observe is not None:
                self.observe(len(batch))
            for p, image in zip(batch, images, strict=True):
                p.future.set_result(RenderResult(image, len(batch), started - p.arrived, synthesis_s))

    @staticmethod
    def _render(batch: list[_Pending]) -> np.ndarray:
        first = batch[0]
        sampler = first.sampler
        ws = torch.stack([p.ws.to(sampler.device) for p in batch])  # [N, num_ws, w_dim]
        return sampler.images_from_ws(
            ws,
            noise_mode=first.group.noise_mode,
            translate=first.group.translate,
            rotate=first.group.rotate,
            noise_seeds=[p.noise_seed for p in batch],
            batch_size=len(batch),
        )
