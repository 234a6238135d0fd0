"""A small stand-in for the official Inception detector: same call signature, TorchScript, 16 features."""

from __future__ import annotations

import io
from pathlib import Path

import torch


class StandInDetector(torch.nn.Module):
    """uint8 [N, 3, H, W] -> a fixed random projection of the 4x4 average-pooled image, [N, 16]."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(3 * 4 * 4, dim, generator=g))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        y = x.to(torch.float32) / 127.5 - 1
        y = torch.nn.functional.adaptive_avg_pool2d(y, 4).flatten(1)
        f = y @ self.proj
        if return_features:
            return f
        return f.softmax(dim=1)


def standin_archive() -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(StandInDetector()), buf)
    return buf.getvalue()


def write_standin(path: Path) -> Path:
    path.write_bytes(standin_archive())
    return path
