"""Command group `metrics` of the `stylegan` command (see gan/cli.py).

`stylegan metrics --network PATH --data ZIP --metrics fid50k_full,kid50k_full [--detector PATH|URL]`
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this group's sub-commands; each sets `handler` to a function taking the parsed args."""
    p = subparsers.add_parser(
        "metrics",
        help="FID / KID / precision-recall of a network against a dataset",
        description="Compute quality metrics by their official names. The Inception detector is read "
        "from --detector (a file, or a URL fetched into the cache with a SHA-256 check).",
    )
    p.add_argument("--network", type=Path, required=True, help="our .safetensors or an official/TF .pkl")
    p.add_argument("--data", type=Path, required=True, help="a prepared dataset (zip or folder)")
    p.add_argument(
        "--metrics", default="fid50k_full", help="comma-separated, e.g. fid50k_full,kid50k_full,pr50k3_full"
    )
    p.add_argument("--detector", default=None, help="Inception detector file or URL (default: NVIDIA's URL)")
    p.add_argument(
        "--detector-sha256", default=None, help="expected SHA-256 of the --detector file (not --pr-detector)"
    )
    p.add_argument(
        "--pr-detector", default=None, help="detector for pr* metrics (officially VGG16); default --detector"
    )
    p.add_argument("--num-gen", type=int, default=None, help="generated images (overrides the name's count)")
    p.add_argument("--max-real", type=int, default=None, help="real images (overrides the name's count)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(handler=_metrics)


def _metrics(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gan.errors import ConfigError, GanError
    from gan.io.checkpoint import load_network
    from gan.metrics import INCEPTION_URL, compute_metrics, load_detector, parse_metric

    # Cheap checks first, then the detector, then the network: a typo or a missing file is reported
    # before a large network is read or a single image is generated.
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not names:
        raise ConfigError("--metrics: no metric given")
    for name in names:
        parse_metric(name)
    if args.batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {args.batch}")
    for path in (args.network, args.data):
        if not path.exists():
            raise FileNotFoundError(2, "No such file or directory", str(path))
    # Two files are read; the message says which one is at fault.
    source = args.detector or INCEPTION_URL
    try:
        detector = load_detector(source, sha256=args.detector_sha256, device=args.device)
    except GanError as exc:
        raise GanError(f"--detector {source}: {exc}") from exc
    try:
        G = load_network(args.network, device=args.device)
    except GanError as exc:
        raise GanError(f"--network {args.network}: {exc}") from exc
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="img", file=sys.stderr)
        bar.update(done - bar.n)

    try:
        results = compute_metrics(
            names,
            G,
            args.data,
            detector=detector,
            pr_detector=args.pr_detector,
            num_gen=args.num_gen,
            max_real=args.max_real,
            device=args.device,
            batch=args.batch,
            seed=args.seed,
            progress=progress,
        )
    finally:
        for bar in bars.values():
            bar.close()
    print(json.dumps({"network": str(args.network), "data": str(args.data), "results": results}))
    return 0
