"""Which device a worker computes on: one rule for the jobs it runs and for what it reports."""

from __future__ import annotations

import torch

from gan.errors import GanError
from gan.sampling import resolve_device
from worker.settings import Settings


class DeviceUnavailable(GanError):
    """The settings ask for a device this machine does not have."""


def device_for(settings: Settings, queue: str) -> torch.device:
    """The inference queue uses STYLEGAN_INFERENCE_DEVICE (`auto`: CUDA when present); training takes
    CUDA when present, as the official train.py does."""
    if queue == "inference" and settings.inference_device != "auto":
        try:
            return resolve_device(settings.inference_device)
        except GanError as exc:
            raise DeviceUnavailable(f"STYLEGAN_INFERENCE_DEVICE={settings.inference_device}: {exc}") from None
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    """`cpu`, or `cuda:0 (NVIDIA H200)`: what a person needs to tell the GPU nodes apart."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
