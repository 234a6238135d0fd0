"""Data-parallel training across processes with torch.distributed.

Like the official trainers we do not wrap the networks in DistributedDataParallel: each rank accumulates
its gradients, one flat all-reduce averages them per phase, and parameters are broadcast from rank 0 once
at the start. This keeps the phases (Gmain, Greg, Dmain, Dreg) free to touch any subset of parameters.
Launch with `--gpus N` (gan/training/local_ranks.py starts the other ranks) or with `torchrun`
(environment variables). NCCL on CUDA,
gloo on CPU (what the tests use). Only rank 0 writes files or calls the progress callback.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_from_torchrun() -> DistEnv | None:
    """The rank layout `torchrun` exports, or None when not launched by it."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return DistEnv(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
    )


def init_process_group(env: DistEnv, device: torch.device, init_method: str | None = None) -> None:
    """Join the group; `init_method` None means torchrun's env:// rendezvous."""
    if not env.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend,
        init_method=init_method or "env://",
        rank=env.rank,
        world_size=env.world_size,
    )


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module_(module: nn.Module, env: DistEnv) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if not env.enabled:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def average_gradients_(params: Sequence[torch.Tensor], env: DistEnv) -> None:
    """Mean of the gradients across ranks in one all-reduce; NaN/inf replaced as official (1e5 clamp).

    The replacement also runs in a single process, so one bad micro-batch cannot poison Adam's moments.
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])  # type: ignore[union-attr]
    if env.enabled:
        dist.all_reduce(flat)
        flat /= env.world_size
    torch.nan_to_num(flat, nan=0.0, posinf=1e5, neginf=-1e5, out=flat)
    for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
        p.grad = g.reshape(p.shape)


def all_reduce_sum(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum a small tensor across ranks (ADA sign counts, the stop flag)."""
    if env.enabled:
        values = values.clone()
        dist.all_reduce(values)
    return values
