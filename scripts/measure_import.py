"""Measure what importing a full-size official network costs the import child, to size its limits.

Builds a StyleGAN2 config-f network at 1024 px (G ~30M parameters, D ~29M, G_ema) with random weights
using NVIDIA's own code from a checkout (`--official-repo`, e.g. NVlabs/stylegan2-ada-pytorch), pickles
it exactly as their training loop writes a snapshot (`torch_utils.persistence`, modules copied to CPU,
eval, no grad), then runs the service's import child on it with generous limits and prints the file
size, the child's wall time, CPU seconds and peak RSS as JSON. No NVIDIA code is kept or copied: it is
imported from the checkout at run time (bench/official.py).

    python scripts/measure_import.py --official-repo ../stylegan2-ada-pytorch --out /tmp/sg2f-1024.pkl
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.official import load_official  # noqa: E402
from worker.model_import import ImportLimits, run_sandboxed_import  # noqa: E402

CONFIG_F_1024 = {
    "z_dim": 512,
    "c_dim": 0,
    "w_dim": 512,
    "img_resolution": 1024,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 8},
    "synthesis_kwargs": {"channel_base": 32768, "channel_max": 512, "num_fp16_res": 4, "conv_clamp": 256},
}


def build_pickle(repo: Path, out: Path) -> None:
    code = load_official(repo)
    networks = code.networks_sg2
    torch.manual_seed(0)
    G = networks.Generator(**CONFIG_F_1024)
    D = networks.Discriminator(
        c_dim=0,
        img_resolution=1024,
        img_channels=3,
        channel_base=32768,
        channel_max=512,
        num_fp16_res=4,
        conv_clamp=256,
        epilogue_kwargs={"mbstd_group_size": 4},
    )
    snapshot = {"training_set_kwargs": None, "augment_pipe": None}
    for name, module in (("G", G), ("D", D), ("G_ema", copy.deepcopy(G))):
        snapshot[name] = copy.deepcopy(module).eval().requires_grad_(False).cpu()
    with out.open("wb") as f:
        pickle.dump(snapshot, f)
    params = {n: sum(p.numel() for p in snapshot[n].parameters()) for n in ("G", "D", "G_ema")}
    print(json.dumps({"built": str(out), "bytes": out.stat().st_size, "params": params}))


def measure(path: Path) -> dict[str, float]:
    limits = ImportLimits(memory_bytes=64 * 2**30, cpu_seconds=3600, timeout_seconds=3600)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        info = run_sandboxed_import(path, Path(tmp) / "out.safetensors", limits)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "file_bytes": path.stat().st_size,
        "num_params_G": info.num_params,
        "wall_s": round(wall, 2),
        "cpu_s": round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 2),
        "child_peak_rss_mib": round(after.ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--official-repo", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not args.out.exists():
        if args.official_repo is None:
            parser.error("--official-repo is needed to build the pickle")
        build_pickle(args.official_repo, args.out)
    print(json.dumps(measure(args.out)))


if __name__ == "__main__":
    main()
