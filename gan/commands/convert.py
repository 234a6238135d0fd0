"""`stylegan convert IN OUT` and `stylegan info PATH [--json]` (see gan/cli.py).

Both read through the restricted loaders in `gan.io`, so a hostile or broken file ends as a `GanError`:
exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gan.errors import ConfigError, GanError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    convert = subparsers.add_parser(
        "convert",
        help="convert an official (PyTorch or TensorFlow) network pickle, or one of our files, to our format",
        description="Read IN without running anything from it and write its generator (G_ema) to OUT "
        "as safetensors + JSON config.",
    )
    convert.add_argument("input", type=Path, metavar="IN")
    convert.add_argument("output", type=Path, metavar="OUT")
    convert.add_argument("--license", dest="license_note", help="licence note stored with the weights")
    convert.add_argument("--source", help="where the weights come from (default: IN's name and sha256)")
    convert.add_argument("--force", action="store_true", help="replace OUT if it exists")
    convert.set_defaults(handler=_convert)

    info = subparsers.add_parser(
        "info",
        help="describe a network file",
        description="Format, architecture, sizes and sha256 of a network.",
    )
    info.add_argument("path", type=Path, metavar="PATH")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=_info)


def _convert(args: argparse.Namespace) -> int:
    from gan.io.checkpoint import convert_network

    src, dst = args.input, args.output
    if dst.exists() and not args.force:
        raise ConfigError(f"{dst} exists; pass --force to replace it")
    if dst.exists() and src.resolve() == dst.resolve():
        raise ConfigError("IN and OUT are the same file")
    if not dst.parent.is_dir():
        raise ConfigError(f"folder {dst.parent} does not exist")
    try:
        out = convert_network(src, dst, license_note=args.license_note, source=args.source)
    except (GanError, FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except OSError as exc:  # disk full, read-only folder, ...: still one line, never a traceback
        raise GanError(f"cannot convert {src} to {dst}: {exc.strerror or exc}") from exc
    except Exception as exc:  # a file we failed to foresee must still not print a traceback
        raise GanError(f"cannot convert {src}: {type(exc).__name__}: {exc}") from exc
    print(out)
    return 0


def _info(args: argparse.Namespace) -> int:
    from gan.io.checkpoint import inspect_network

    try:
        info = inspect_network(args.path)
    except (GanError, FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except OSError as exc:
        raise GanError(f"cannot read {args.path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # a file we failed to foresee must still not print a traceback
        raise GanError(f"cannot read {args.path}: {type(exc).__name__}: {exc}") from exc
    if args.json:
        json.dump(info.to_dict(), sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    rows = [
        ("format", info.format),
        ("architecture", info.architecture),
        ("resolution", f"{info.resolution}x{info.resolution}"),
        ("z_dim", info.z_dim),
        ("w_dim", info.w_dim),
        ("c_dim", info.c_dim),
        ("num_ws", info.num_ws),
        ("parameters", f"{info.num_params:,}"),
        ("sha256", info.sha256),
        ("license", info.license or "-"),
        ("source", info.source or "-"),
    ]
    for key, value in rows:
        print(f"{key:<13}{value}")
    return 0
