"""Command group `train` of the `stylegan` command (see gan/cli.py): `stylegan train --data ZIP --outdir DIR`.

Thin: it turns flags into `TrainOptions` and calls `gan.training.local_ranks.launch`. Bad input raises
`GanError`, which `gan.cli.run` reports on one line with exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gan.errors import ConfigError
from gan.vocabulary import PRESET_NAMES


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this group's sub-commands; each sets `handler` to a function taking the parsed args."""
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a generator",
        description="Train StyleGAN2-ADA / StyleGAN3 on a prepared data set; fine-tune from an official "
        "pickle or resume one of our checkpoints exactly (--resume).",
    )
    p.add_argument("--data", type=Path, required=True, help="prepared data set (zip or folder)")
    p.add_argument("--outdir", type=Path, required=True, help="where previews, stats and checkpoints go")
    p.add_argument("--cfg", default="auto", choices=PRESET_NAMES, help="base configuration (default auto)")
    p.add_argument("--resume", type=Path, help="official .pkl to fine-tune, or our checkpoint to continue")
    p.add_argument(
        "--kimg", type=float, help="training length in thousands of real images (may be fractional)"
    )
    p.add_argument("--batch", type=int, help="total batch size")
    p.add_argument("--batch-gpu", type=int, help="micro-batch per GPU (gradient accumulation)")
    p.add_argument("--gamma", type=float, help="R1 weight")
    p.add_argument("--aug", default="ada", choices=("ada", "fixed", "noaug"))
    p.add_argument("--p", type=float, help="augmentation probability for --aug fixed")
    p.add_argument("--target", type=float, default=0.6, help="ADA target for sign(D(real))")
    p.add_argument("--augpipe", default="bgc", help="augmentation preset (bgc, bgcfnc, ...)")
    p.add_argument("--mirror", action="store_true", help="add x-flipped copies of the data")
    p.add_argument("--cond", action="store_true", help="train on the data set's labels")
    p.add_argument("--freezed", type=int, default=0, help="freeze the first N layers of D (Freeze-D)")
    p.add_argument("--snap", type=int, default=50, help="ticks between checkpoints and previews")
    p.add_argument("--tick", type=float, default=4.0, help="kimg per tick (may be fractional)")
    p.add_argument("--keep", type=int, default=3, help="checkpoints to keep besides the best")
    p.add_argument("--metrics", default="", help="comma-separated metrics (e.g. fid50k_full), or none")
    p.add_argument("--detector", help="Inception detector for --metrics (path or URL; default: official URL)")
    p.add_argument(
        "--metrics-num-gen",
        type=int,
        help="generated images per metric (default: the count in its name, e.g. 50k); fewer is faster "
        "and biased (FID upwards), for quick checks",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bit-exact reruns)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--gpus", type=int, default=1, help="spawn this many ranks (or launch with torchrun)")
    p.add_argument("--workers", type=int, help="data loader processes")
    p.add_argument("--fp32", action="store_true", help="disable mixed precision")
    p.add_argument("--cbase", type=int, help="capacity: channels = min(cbase / resolution, cmax)")
    p.add_argument("--cmax", type=int, help="maximum channels per layer")
    p.add_argument("--map", type=int, dest="map_layers", help="mapping network depth")
    p.add_argument("--z-dim", type=int, help="latent size (default 512)")
    p.add_argument("--w-dim", type=int, help="intermediate latent size (default 512)")
    p.add_argument("--mbstd-group", type=int, help="minibatch standard deviation group size")
    p.add_argument("--glr", type=float, help="G learning rate")
    p.add_argument("--dlr", type=float, help="D learning rate")
    p.add_argument("--preview-images", type=int, default=64, help="upper bound on the preview grid")
    p.set_defaults(handler=_run)


def _positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"--{name} must be > 0, got {value:g}")


def _run(args: argparse.Namespace) -> int:
    from gan.training.local_ranks import launch
    from gan.training.options import TrainOptions

    for name in (
        "batch",
        "batch_gpu",
        "cbase",
        "cmax",
        "map_layers",
        "z_dim",
        "w_dim",
        "mbstd_group",
        "glr",
        "dlr",
    ):
        _positive(name.replace("_", "-").replace("map-layers", "map"), getattr(args, name))
    if not args.data.exists():
        raise FileNotFoundError(2, "No such file or directory", str(args.data))
    if args.resume is not None and not args.resume.is_file():
        raise FileNotFoundError(2, "No such file or directory", str(args.resume))
    metrics = tuple(m for m in args.metrics.split(",") if m and m.lower() != "none")
    options = TrainOptions(
        data=args.data,
        outdir=args.outdir,
        cfg=args.cfg,
        resume=args.resume,
        kimg=args.kimg,
        batch=args.batch,
        batch_gpu=args.batch_gpu,
        gamma=args.gamma,
        aug=args.aug,
        p=args.p,
        target=args.target,
        augpipe=args.augpipe,
        mirror=args.mirror,
        cond=args.cond,
        freezed=args.freezed,
        snap=args.snap,
        tick=args.tick,
        keep=args.keep,
        metrics=metrics,
        detector=args.detector,
        metrics_num_gen=args.metrics_num_gen,
        seed=args.seed,
        deterministic=args.deterministic,
        device=args.device,
        gpus=args.gpus,
        workers=args.workers,
        fp32=args.fp32,
        preview_images=args.preview_images,
        cbase=args.cbase,
        cmax=args.cmax,
        map_layers=args.map_layers,
        z_dim=args.z_dim,
        w_dim=args.w_dim,
        mbstd_group=args.mbstd_group,
        glr=args.glr,
        dlr=args.dlr,
    )
    result = launch(options)
    if result.checkpoint is not None:  # rank 0 (the only rank unless torchrun started this one)
        print(f"trained to {result.kimg:g} kimg; checkpoint {result.checkpoint}; model {result.model}")
    return 0
