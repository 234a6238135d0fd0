"""Launching training: one process, `--gpus N` ranks of one host, or the rank torchrun says.

For N ranks the calling process is rank 0: it trains in the calling thread and calls its callback
exactly as a single process does (only rank 0 reports, writes files and returns the result), and ranks
1..N-1 are plain child processes (`python -m gan.training.local_ranks`) that receive the options as
JSON and meet rank 0 through a rendezvous file. So the callback never crosses a process boundary: a
service's callback holds database sessions, storage clients and events that other threads of its
process set (cancel, a lost lease), none of which could be pickled into a spawned rank. NCCL on CUDA
(rank r on device r), gloo on CPU.

A child dies with the thread that started it (Linux PR_SET_PDEATHSIG), so a worker killed mid-run
leaves no rank behind holding a device; if rank 0 stops with an error (a lost lease, a crash) the
children are killed; a child that fails becomes a GanError naming its rank and exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from gan.errors import ConfigError, GanError
from gan.training.distributed import DistEnv, env_from_torchrun
from gan.training.loop import TrainResult, train
from gan.training.options import TrainOptions
from gan.training.progress import TrainingCallback

log = logging.getLogger(__name__)

# Seconds the other ranks get to exit once rank 0 has finished: they only leave the process group.
CHILD_EXIT_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def device_kind(options: TrainOptions) -> str:
    """`cuda` or `cpu`, as the loop picks it; ConfigError if this host has fewer CUDA devices than ranks."""
    kind = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and options.gpus > 1:
        count = torch.cuda.device_count()
        if count < options.gpus:
            raise ConfigError(
                f"gpus {options.gpus}: this host has {count} CUDA device(s) and each rank needs its own"
            )
    return kind


def launch(options: TrainOptions, callback: TrainingCallback | None = None) -> TrainResult:
    """Train as this process was started: under torchrun, as the rank it says (the result is rank 0's;
    other ranks return theirs without files); else on `options.gpus` ranks of this host."""
    env = env_from_torchrun()
    if env is not None:
        return train(options, callback, env, None)
    return train_on_local_ranks(options, callback)


def train_on_local_ranks(options: TrainOptions, callback: TrainingCallback | None = None) -> TrainResult:
    """Train with `options.gpus` ranks on this host, this process being rank 0 (see the module note)."""
    world_size = options.gpus
    if world_size == 1:
        return train(options, callback)
    kind = device_kind(options)
    with tempfile.TemporaryDirectory(prefix="stylegan-ranks-") as tmp:
        init_method = Path(tmp, "rendezvous").absolute().as_uri()
        options_file = Path(tmp, "options.json")
        options_file.write_text(json.dumps(options.to_dict()))
        children: list[subprocess.Popen[bytes]] = []
        try:
            for rank in range(1, world_size):
                children.append(_start_rank(options_file, rank, world_size, init_method, kind))
            log.info(
                "training on %d ranks (%s, %s): rank 0 is process %d, others %s",
                world_size,
                "nccl" if kind == "cuda" else "gloo",
                kind,
                os.getpid(),
                [c.pid for c in children],
            )
            result = train(options, callback, DistEnv(rank=0, world_size=world_size), init_method)
        except BaseException as exc:
            failed = _kill(children)
            if failed and not isinstance(exc, GanError | KeyboardInterrupt):
                # Rank 0's own error is then only "connection closed by peer"; say which rank went.
                raise GanError(
                    f"training rank {failed[0][0]} of {world_size} exited with code {failed[0][1]}"
                ) from exc
            raise
        failed = _wait(children)
        if failed:
            raise GanError(f"training rank {failed[0][0]} of {world_size} exited with code {failed[0][1]}")
        return result


def _start_rank(
    options_file: Path, rank: int, world_size: int, init_method: str, kind: str
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    # The child imports this package from where the parent did, whatever its working directory.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if kind == "cpu" and "OMP_NUM_THREADS" not in env:
        # N ranks each using every core would oversubscribe the CPU N times over.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // world_size))
    command = [
        sys.executable,
        "-m",
        "gan.training.local_ranks",
        str(options_file),
        "--rank",
        str(rank),
        "--world-size",
        str(world_size),
        "--init-method",
        init_method,
        "--parent",
        str(os.getpid()),
    ]
    return subprocess.Popen(command, env=env)


def _wait(children: Sequence[subprocess.Popen[bytes]]) -> list[tuple[int, int]]:
    """(rank, exit code) of each child that failed, after waiting for all of them."""
    failed = []
    for rank, child in enumerate(children, start=1):
        try:
            code = child.wait(CHILD_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
        if code != 0:
            failed.append((rank, code))
    return failed


def _kill(children: Sequence[subprocess.Popen[bytes]]) -> list[tuple[int, int]]:
    """Kill the children still running; (rank, exit code) of those that had already failed on their own."""
    failed = [(rank, c.returncode) for rank, c in enumerate(children, start=1) if c.poll() not in (None, 0)]
    for child in children:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        child.wait()
    return failed


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when the thread that started it ends (elsewhere: nothing)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent went before the request took effect
        os._exit(1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gan.training.local_ranks", description=__doc__)
    parser.add_argument("options", type=Path, help="TrainOptions as JSON (TrainOptions.to_dict)")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--init-method", required=True)
    parser.add_argument("--parent", type=int, required=True, help="pid of rank 0")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    options = TrainOptions.from_dict(json.loads(args.options.read_text()))
    env = DistEnv(rank=args.rank, world_size=args.world_size, local_rank=args.rank)
    try:
        train(options, None, env, args.init_method)
    except GanError as exc:
        print(f"rank {args.rank}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
