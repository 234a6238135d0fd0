"""Generator speed, ours against NVIDIA's official code, in the same process on the same device.

    python bench/bench_generate.py --device cuda --arch stylegan2 --res 1024 --batch 32 --fp16 \
        --official-repo ~/src/stylegan3 [--json out.json]
    python bench/bench_generate.py --device cpu --suite --official-repo ~/src/stylegan3

Both networks are built from one `GeneratorConfig` (the official training configuration for the
architecture unless --cbase/--cmax/--map say otherwise), the official one draws random weights, and ours
receives them by a state_dict copy. Before anything is timed both must give the same images (max abs diff
within tolerance), so the two sides compute the same thing. Each call is one full forward, z -> image,
with truncation psi (0.7 as the reference figures) and constant noise, under torch.no_grad.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import environment, fmt_bytes, fmt_ratio, paired_timing, parse_device, peak_memory
from official import OfficialCode, build_official_generator, copy_weights, load_official

from gan.config import (
    Architecture,
    GeneratorConfig,
    MappingConfig,
    StyleGAN2SynthesisConfig,
    StyleGAN3SynthesisConfig,
)
from gan.generator import build_generator
from gan.host_memory import keep_freed_memory

# Max abs difference in [-1, 1] image units allowed before timing. fp32: the two codes differ only in
# summation order (we measured 0 for StyleGAN2 and ~5e-7 for StyleGAN3 on CPU). fp16 keeps ~3 decimal
# digits and the two codes cast at slightly different points, so a few fp16 ulps at |x| ~ 1 can differ.
TOLERANCE = {False: 1e-3, True: 5e-2}


@dataclass(frozen=True)
class Row:
    arch: Architecture
    res: int
    batch: int
    fp16: bool
    reference: str = ""  # the official H100 figure this row is compared with, for the table


# The reference table (official code with its CUDA ops, H100, random weights, psi 0.7).
CUDA_SUITE = (
    Row("stylegan2", 1024, 32, True, "291 img/s, 9.6 GB"),
    Row("stylegan2", 1024, 1, True, "18 ms"),
    Row("stylegan2", 256, 32, True, "1216 img/s"),
    Row("stylegan3-t", 1024, 1, True, "13 ms"),
)
# The same kinds of rows scaled down so that a shared 2-core CPU finishes in minutes (fp32: both codes
# run fp32 on CPU).
CPU_SUITE = (
    Row("stylegan2", 256, 4, False),
    Row("stylegan2", 64, 8, False),
    Row("stylegan2", 64, 1, False),
    Row("stylegan3-t", 64, 1, False),
    Row("stylegan3-r", 64, 1, False),
)


def generator_config(
    arch: Architecture, res: int, fp16: bool, cbase: int | None, cmax: int | None, map_layers: int | None
) -> GeneratorConfig:
    """The official training configuration (stylegan3 train.py defaults; `--fp32` without --fp16)."""
    num_fp16_res, conv_clamp = (4, 256.0) if fp16 else (0, None)
    if arch == "stylegan2":
        synthesis: StyleGAN2SynthesisConfig | StyleGAN3SynthesisConfig = StyleGAN2SynthesisConfig(
            channel_base=cbase or 32768,
            channel_max=cmax or 512,
            num_fp16_res=num_fp16_res,
            conv_clamp=conv_clamp,
        )
        mapping = MappingConfig(num_layers=map_layers or 8)
    else:
        r = arch == "stylegan3-r"
        synthesis = StyleGAN3SynthesisConfig(
            channel_base=cbase or (65536 if r else 32768),  # config R doubles the feature maps
            channel_max=cmax or (1024 if r else 512),
            num_fp16_res=num_fp16_res,
            conv_clamp=conv_clamp,
            conv_kernel=1 if r else 3,
            use_radial_filters=r,
        )
        mapping = MappingConfig(num_layers=map_layers or 2)
    return GeneratorConfig(architecture=arch, img_resolution=res, mapping=mapping, synthesis=synthesis)


def bench_row(code: OfficialCode, row: Row, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    config = generator_config(row.arch, row.res, row.fp16, args.cbase, args.cmax, args.map)
    torch.manual_seed(args.seed)
    G_official = build_official_generator(code, config).eval().requires_grad_(False).to(device)
    G_ours = build_generator(config).eval().requires_grad_(False)
    copy_weights(G_official, G_ours)
    G_ours = G_ours.to(device)
    force_fp32 = not row.fp16
    psi = args.psi

    z = torch.randn([row.batch, config.z_dim], generator=torch.Generator().manual_seed(args.seed)).to(device)
    c = torch.zeros([row.batch, 0], device=device)

    @torch.no_grad()
    def ours() -> None:
        G_ours(z, c, psi=psi, noise_mode="const", force_fp32=force_fp32)

    @torch.no_grad()
    def official() -> None:
        G_official(z, c, truncation_psi=psi, noise_mode="const", force_fp32=force_fp32)

    # Same images first, or the timing compares two different computations.
    with torch.no_grad():
        n = min(row.batch, 4)
        a = G_ours(z[:n], c[:n], psi=psi, noise_mode="const", force_fp32=force_fp32).float()
        b = G_official(z[:n], c[:n], truncation_psi=psi, noise_mode="const", force_fp32=force_fp32).float()
        max_abs_diff = float((a - b).abs().max())
    if not max_abs_diff <= TOLERANCE[row.fp16]:
        raise SystemExit(
            f"{row.arch} {row.res}px: ours and official differ by {max_abs_diff:.3g} "
            f"(> {TOLERANCE[row.fp16]}); refusing to time different computations"
        )

    timing = paired_timing(ours, official, device, args.warmup, args.rounds, args.calls)
    mem_ours = peak_memory(ours, device)
    mem_official = peak_memory(official, device)
    result = {
        "arch": row.arch,
        "res": row.res,
        "batch": row.batch,
        "fp16": row.fp16,
        "psi": psi,
        "config": config.to_dict(),
        "max_abs_diff": max_abs_diff,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "calls_per_round": args.calls,
        "reference_official_h100": row.reference,
        **timing.to_dict(),
        "ours_img_per_s": row.batch / timing.to_dict()["ours_median_s"],
        "official_img_per_s": row.batch / timing.to_dict()["official_median_s"],
        "ours_peak_memory": mem_ours,
        "official_peak_memory": mem_official,
    }
    return result


def markdown_row(r: dict[str, Any]) -> str:
    """One line of bench/RESULTS.md's generator table."""
    per_img = 1e3 / r["ours_img_per_s"], 1e3 / r["official_img_per_s"]
    return (
        f"| {r['arch']} | {r['res']} | {r['batch']} | {'fp16' if r['fp16'] else 'fp32'} "
        f"| {r['ours_img_per_s']:.2f} img/s ({per_img[0]:.0f} ms/img) "
        f"| {r['official_img_per_s']:.2f} img/s ({per_img[1]:.0f} ms/img) "
        f"| {fmt_ratio(r)} "
        f"| {fmt_bytes(r['ours_peak_memory']['bytes'])} / {fmt_bytes(r['official_peak_memory']['bytes'])} "
        f"| {r['max_abs_diff']:.1e} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--official-repo",
        type=Path,
        required=True,
        help="checkout of NVlabs/stylegan3 or stylegan2-ada-pytorch",
    )
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument("--arch", choices=("stylegan2", "stylegan3-t", "stylegan3-r"), default="stylegan2")
    p.add_argument("--res", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument(
        "--fp16", action="store_true", help="top 4 resolutions in fp16 with conv_clamp 256 (CUDA only)"
    )
    p.add_argument("--suite", action="store_true", help="the reference table's rows (scaled down on CPU)")
    p.add_argument("--psi", type=float, default=0.7)
    p.add_argument("--cbase", type=int, help="channel_base (default: the official training config)")
    p.add_argument("--cmax", type=int, help="channel_max (default: the official training config)")
    p.add_argument("--map", type=int, help="mapping layers (default: 8 for StyleGAN2, 2 for StyleGAN3)")
    p.add_argument(
        "--official-impl",
        choices=("cuda", "ref"),
        default="cuda",
        help="official custom CUDA ops or their reference path",
    )
    p.add_argument("--warmup", type=int, help="untimed calls per side (default: 10 on CUDA, 2 on CPU)")
    p.add_argument("--rounds", type=int, default=5, help="paired rounds; figures are their median")
    p.add_argument("--calls", type=int, help="calls per side per round (default: 20 on CUDA, 1 on CPU)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc malloc as `stylegan` and the worker set it (gan.host_memory), for both sides",
    )
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if args.keep_freed_memory and not keep_freed_memory():
        p.error("--keep-freed-memory: this platform's malloc cannot be set (glibc on Linux only)")

    device = parse_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    args.calls = args.calls or (20 if cuda else 1)
    if args.fp16 and not cuda:
        p.error("--fp16 needs --device cuda: on CPU our code and stylegan3's run fp32 anyway")
    # One numeric mode for both sides: cuDNN autotuning on, TF32 off (as the official training loop).
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    code = load_official(args.official_repo, impl=args.official_impl, device=device)
    rows = (
        (CUDA_SUITE if cuda else CPU_SUITE)
        if args.suite
        else (Row(args.arch, args.res, args.batch, args.fp16),)
    )
    env = environment(device)
    env["keep_freed_memory"] = args.keep_freed_memory
    print(json.dumps({"environment": env, "official": code.describe()}, indent=1), file=sys.stderr)
    results = []
    for row in rows:
        if cuda:
            torch.cuda.empty_cache()  # the previous row's networks are gone; start each row clean
        if row.arch != "stylegan2" and code.networks_sg3 is None:
            print(f"skipped {row.arch}: {code.repo} has no StyleGAN3", file=sys.stderr)
            continue
        results.append(bench_row(code, row, device, args))
        print(markdown_row(results[-1]), flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"environment": env, "official": code.describe(), "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
