"""Command group `dataset` of the `stylegan` command (see gan/cli.py).

`stylegan dataset prepare --source DIR|ZIP --dest OUT.zip --resolution R [--transform ...] [--labels F]`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this group's sub-commands; each sets `handler` to a function taking the parsed args."""
    group = subparsers.add_parser("dataset", help="prepare training sets")
    sub = group.add_subparsers(dest="dataset_command", required=True, parser_class=type(group))
    p = sub.add_parser(
        "prepare",
        help="turn a folder or zip of images into a training set (official layout)",
        description="Decode, orient, convert to RGB, crop or pad to a square and resize every image of "
        "SOURCE into DEST.zip; every rejected file is listed with its reason.",
    )
    p.add_argument("--source", type=Path, required=True, metavar="DIR|ZIP")
    p.add_argument("--dest", type=Path, required=True, metavar="OUT.zip")
    p.add_argument("--resolution", type=int, required=True, metavar="R", help="output size, a power of two")
    p.add_argument("--transform", choices=["center-crop", "center-crop-wide", "pad"], default="center-crop")
    p.add_argument(
        "--labels", type=Path, default=None, help="JSON: file name -> class index, or dataset.json"
    )
    p.add_argument("--min-side", type=int, default=None, help="reject images smaller than this (px)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gan.training.dataset_prepare import PrepareLimits, prepare_dataset

    limits = PrepareLimits() if args.min_side is None else PrepareLimits(min_side=args.min_side)
    bar = None if args.quiet else tqdm(unit="file", desc="prepare", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        report = prepare_dataset(
            args.source,
            args.dest,
            args.resolution,
            transform=args.transform,
            labels=args.labels,
            progress=progress,
            limits=limits,
        )
    finally:  # NoUsableImagesError is a GanError: gan.cli prints its one line and exits 2
        if bar is not None:
            bar.close()
    for r in report.rejected:
        detail = f" ({r.detail})" if r.detail else ""
        print(f"rejected {r.name}: {r.reason}{detail}")
    labels = "labeled" if report.labeled else "unlabeled"
    print(
        f"{report.accepted} images ({labels}, {report.resolution}x{report.resolution}) -> {report.dest}; {len(report.rejected)} rejected"
    )
    for name in report.unknown_labels:
        print(f"label for unknown file: {name}")
    return 0
