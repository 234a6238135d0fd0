"""The library's commands, shared by `stylegan` (api/cli.py adds `serve`, `worker` and `migrate`).

Each command group lives in `gan/commands/` and only parses arguments, calls the library and writes
files. Bad input surfaces as `GanError` and becomes exit code 2 with a one-line reason.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from gan.errors import GanError
from gan.host_memory import keep_freed_memory

Handler = Callable[[argparse.Namespace], int | None]


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register every gan command; heavy modules are imported inside the handlers."""
    from gan.commands import convert, dataset, directions, generate, metrics, project, train

    for group in (generate, directions, convert, dataset, train, metrics, project):
        group.register(subparsers)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own usage errors: one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser(
    extra: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] | None = None,
) -> argparse.ArgumentParser:
    parser = _Parser(prog="stylegan", description="Serve and train style-based generators.")
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser
    )
    add_commands(subparsers)
    if extra is not None:
        extra(subparsers)
    return parser


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse and dispatch; a `GanError` (or a missing file) is one line on stderr and exit code 2."""
    keep_freed_memory()  # before any command starts threads (see gan.host_memory)
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return int(handler(args) or 0)
    except GanError as exc:
        sys.stderr.write(f"stylegan {args.command}: error: {exc}\n")
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        sys.stderr.write(f"stylegan {args.command}: error: {exc.strerror}: {exc.filename}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
