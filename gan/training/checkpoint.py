"""Training checkpoints: one safetensors file per snapshot, with its JSON in the safetensors metadata.

Tensors: the weights and buffers of G, D and G_ema, the optimizer moments, the path-length mean.
JSON (metadata key `training`): the configs, counters, augment p and ADA state, the RNG states (Python,
NumPy, torch CPU/CUDA, the data and latent generators), the sampler position, the options and metrics.
No pickle is ever written or read: a checkpoint cannot execute code when loaded.

Writes are atomic (temporary file in the same folder, fsync, rename, fsync of the folder), so a process
killed at any instant leaves either the previous set of checkpoints or the previous set plus a complete
new one; `latest_checkpoint` ignores temporary files.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from gan.config import GeneratorConfig
from gan.errors import FormatError
from gan.generator import build_generator
from gan.io.checkpoint import TRAINING_FORMAT_NAME, save_generator
from gan.io.files import atomic_write_bytes

CHECKPOINT_FORMAT = TRAINING_FORMAT_NAME  # told apart from a generator file by gan.io.checkpoint
CHECKPOINT_VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d{10})\.safetensors$")


def checkpoint_name(cur_nimg: int) -> str:
    return f"checkpoint-{cur_nimg:010d}.safetensors"


@dataclass
class TrainingCheckpoint:
    """The contents of a checkpoint: `tensors` by prefixed name, and the JSON `meta`."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    path: Path | None = None

    def module_state(self, prefix: str) -> dict[str, torch.Tensor]:
        """The state dict saved under `prefix` ("G", "D", "G_ema")."""
        head = prefix + "."
        state = {k[len(head) :]: v for k, v in self.tensors.items() if k.startswith(head)}
        if not state:
            raise FormatError(f"checkpoint {self.path} has no {prefix} weights")
        return state


# Writing ------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, tensors: Mapping[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Serialise tensors (copied to contiguous CPU memory) and meta into one safetensors file."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    header = {
        "format": CHECKPOINT_FORMAT,
        "version": str(CHECKPOINT_VERSION),
        "training": json.dumps(meta, allow_nan=True),
    }
    atomic_write_bytes(Path(path), st_save(flat, metadata=header))
    return Path(path)


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """Only the JSON part; cheap (reads the header only)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise FormatError(f"{path}: not a readable training checkpoint ({exc})") from exc
    if header.get("format") != CHECKPOINT_FORMAT:
        raise FormatError(f"{path}: not a training checkpoint (format {header.get('format')!r})")
    meta: dict[str, Any] = json.loads(header["training"])
    return meta


def load_checkpoint(path: Path) -> TrainingCheckpoint:
    path = Path(path)
    data = path.read_bytes()
    meta = read_checkpoint_meta(path)
    try:
        tensors = st_load(data)
    except Exception as exc:
        raise FormatError(f"{path}: damaged training checkpoint ({exc})") from exc
    return TrainingCheckpoint(tensors=tensors, meta=meta, path=path)


def is_training_checkpoint(path: Path) -> bool:
    try:
        read_checkpoint_meta(path)
    except (FormatError, OSError):
        return False
    return True


def write_checkpoint(
    outdir: Path,
    *,
    networks: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    pl_mean: torch.Tensor,
    configs: Mapping[str, dict[str, Any]],
    counters: dict[str, int],
    augment: dict[str, Any],
    rng: dict[str, Any],
    metrics: dict[str, float],
) -> Path:
    """A training run's snapshot in `outdir`, named by `counters["cur_nimg"]`, with all a resumed run needs
    to continue bit-exactly: the networks' weights and buffers ("G", "D", "G_ema"), the optimizers'
    moments ("opt_G", "opt_D"; their scalars in the JSON), the path-length mean, and in the JSON the
    `configs` ("options", "preset", "G_config", "D_config"), the counters, the augment and RNG state and
    the metrics of this snapshot."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in networks.items():
        tensors.update(module_tensors(name, module))
    opt_meta = {}
    for name, opt in optimizers.items():
        t, m = optimizer_tensors(name, opt)
        tensors.update(t)
        opt_meta[name] = m
    tensors["loss.pl_mean"] = pl_mean
    meta = {
        **configs,
        "counters": counters,
        "kimg": counters["cur_nimg"] / 1e3,
        "augment": augment,
        "optimizers": opt_meta,
        "rng": rng,
        "metrics": metrics,
    }
    return save_checkpoint(outdir / checkpoint_name(counters["cur_nimg"]), tensors, meta)


# Finding and pruning ------------------------------------------------------------------------------


def list_checkpoints(outdir: Path) -> list[Path]:
    """Complete checkpoints in `outdir`, oldest first (temporary files are never listed)."""
    outdir = Path(outdir)
    if not outdir.is_dir():
        return []
    found = [p for p in outdir.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(outdir: Path) -> Path | None:
    """The newest checkpoint that loads; what a replaced worker resumes from."""
    for path in reversed(list_checkpoints(outdir)):
        if is_training_checkpoint(path):
            return path
    return None


def prune_checkpoints(outdir: Path, keep_last: int, best_metric: str | None = None) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints and the best one by `best_metric`; return deleted."""
    paths = list_checkpoints(outdir)
    keep = set(paths[-keep_last:]) if keep_last > 0 else set()
    if best_metric is not None:
        scored = []
        for p in paths:
            value = read_checkpoint_meta(p).get("metrics", {}).get(best_metric)
            if isinstance(value, int | float) and np.isfinite(value):
                scored.append((float(value), p))
        if scored:
            keep.add(min(scored, key=lambda t: t[0])[1])
    removed = []
    for p in paths:
        if p not in keep:
            p.unlink(missing_ok=True)
            removed.append(p)
    for stale in Path(outdir).glob(".checkpoint-*.tmp-*"):  # left by a process killed mid-write
        with contextlib.suppress(OSError):
            stale.unlink()
    return removed


# Flattening module, optimizer and RNG state -------------------------------------------------------


def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def optimizer_tensors(
    prefix: str, opt: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `opt.state_dict()` into tensors (`prefix.state.<index>.<key>`) and JSON (everything else)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.state.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, prefix: str, ckpt: TrainingCheckpoint) -> None:
    meta = ckpt.meta["optimizers"][prefix]
    state: dict[int, dict[str, Any]] = {}
    head = prefix + ".state."
    for name, value in ckpt.tensors.items():
        if name.startswith(head):
            index, key = name[len(head) :].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every random state a training step reads, as JSON-able data."""
    mt, keys, pos, has_gauss, cached = cast(
        tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True)
    )
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [mt, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch_cpu": torch.get_rng_state().tolist(),
        "torch_cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()]
        if torch.cuda.is_available()
        else [],
        "generators": {k: g.get_state().tolist() for k, g in (generators or {}).items()},
    }
    return state


def restore_rng_state(
    state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None
) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    mt, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((mt, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch_cpu"], dtype=torch.uint8))
    if state["torch_cuda"] and torch.cuda.is_available():
        cuda_states = [torch.tensor(s, dtype=torch.uint8) for s in state["torch_cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    for name, g in (generators or {}).items():
        g.set_state(torch.tensor(state["generators"][name], dtype=torch.uint8))


# Export -------------------------------------------------------------------------------------------


def export_generator(checkpoint_or_G_ema: Path | str | nn.Module, path: Path | str) -> Path:
    """Write G_ema as a model file the service registers (`gan.io.checkpoint.save_generator`'s format)."""
    if isinstance(checkpoint_or_G_ema, nn.Module):
        G_ema = checkpoint_or_G_ema
    else:
        ckpt = load_checkpoint(Path(checkpoint_or_G_ema))
        G_ema = build_generator(GeneratorConfig.from_dict(ckpt.meta["G_config"]))
        G_ema.load_state_dict(ckpt.module_state("G_ema"))
    G_ema = G_ema.eval().requires_grad_(False)
    save_generator(G_ema, Path(path))  # type: ignore[arg-type]  # save_generator checks it is a Generator
    return Path(path)
