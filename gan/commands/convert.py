"""Command group `convert` of the `stylegan` command (see gan/cli.py)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this group's sub-commands; each sets `handler` to a function taking the parsed args."""
