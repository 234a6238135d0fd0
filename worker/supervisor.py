"""Keeping `stylegan serve`'s worker processes alive, and never letting them outlive it.

- `Supervisor` starts each worker, forwards its output, restarts it with exponential backoff when it
  exits, and gives up (so that `serve` exits non-zero with the worker's last line) after a run of quick
  failures: a worker that cannot even start (a missing dependency, a bad setting) would otherwise be
  restarted forever behind a service that looks up.
- `exit_with_parent` is the other half: a worker started by `serve` kills its own process group (itself
  and its pool children) as soon as `serve` is gone, SIGKILL included, since nothing runs in a killed
  process to stop its children. Its job's lease then runs out and the job runs again.
- `DataDirLock` makes one `serve` the owner of a data directory, so a second one (or a restart racing
  the old one) never runs a second set of workers and brokers beside the first.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

# A worker that exits within this many seconds of starting failed "quickly": it never got going.
QUICK_EXIT_S = 30.0
# Quick failures in a row after which the supervisor gives up and `serve` exits with the reason.
MAX_QUICK_FAILURES = 5
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
POLL_S = 0.2
# How often an orphan check runs in a worker: the delay between `serve`'s death and its workers'.
PARENT_POLL_S = 0.5
LOCK_FILE = "serve.lock"
PR_SET_PDEATHSIG = 1


class DataDirBusy(RuntimeError):
    """Another `stylegan serve` holds this data directory."""


class DataDirLock:
    """An exclusive flock on data_dir/serve.lock, held while `serve` runs; the kernel drops it when the
    process ends, however it ends, so a stale lock cannot block a restart."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirBusy(
                f"another `stylegan serve` (pid {holder}) is running on {self.path.parent}; stop it first, "
                "or give this one its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` for a child that must not outlive this process: the kernel sends it `sig` when
    the thread that forked it ends (prctl PR_SET_PDEATHSIG). Fork it from a thread that lives as long
    as the process (the main thread, or the supervisor's)."""

    def set_death_signal() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return set_death_signal


def exit_with_parent(parent_pid: int) -> threading.Thread:
    """In a worker started by `serve`: SIGKILL this process group once `parent_pid` is gone.

    A thread polls rather than PR_SET_PDEATHSIG because the death signal would reach only this process,
    not the prefork pool's children, which would go on running a job nobody supervises. The worker runs
    in its own session (`serve` starts it so), so its group is exactly itself and its children."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


@dataclass
class Child:
    """One supervised process: how to start it, and what it last said."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    last_line: str = ""
    quick_failures: int = 0
    restart_at: float | None = None
    readers: list[threading.Thread] = field(default_factory=list)


class Supervisor(threading.Thread):
    """Starts `children`, restarts each one that exits, and calls `on_give_up(reason)` once a child
    failed quickly MAX_QUICK_FAILURES times in a row. Children are forked from this thread, which lives
    until `stop()`, so their death signal (see `die_with_parent`) fires only when `serve` is gone."""

    def __init__(self, children: Sequence[Child], on_give_up: Callable[[str], None], out: IO[str]) -> None:
        super().__init__(name="worker-supervisor", daemon=True)
        self.children = list(children)
        self.on_give_up = on_give_up
        self.out = out
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._out_lock = threading.Lock()

    # --- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        for child in self.children:
            self._start(child)
        self._started.set()
        while not self._stopping.wait(POLL_S):
            for child in self.children:
                if self._stopping.is_set():
                    return
                self._check(child)

    def wait_started(self, timeout: float = 30.0) -> bool:
        return self._started.wait(timeout)

    def _check(self, child: Child) -> None:
        now = time.monotonic()
        if child.process is None:
            if child.restart_at is not None and now >= child.restart_at:
                self._start(child)
            return
        code = child.process.poll()
        if code is None:
            return
        for reader in child.readers:
            reader.join(1.0)  # its last words, before they are quoted
        child.process = None
        ran = now - child.started_at
        # A child that got going before it failed starts a new count.
        child.quick_failures = child.quick_failures + 1 if ran < QUICK_EXIT_S else 1
        said = f"; its last line: {child.last_line}" if child.last_line else ""
        if child.quick_failures >= MAX_QUICK_FAILURES:
            reason = (
                f"the {child.name} worker exited {child.quick_failures} times in a row within "
                f"{QUICK_EXIT_S:.0f} s of starting (exit code {code}){said}"
            )
            self._say(f"stylegan serve: error: {reason}")
            self._stopping.set()
            self.on_give_up(reason)
            return
        delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (child.quick_failures - 1))
        self._say(
            f"stylegan serve: the {child.name} worker exited with code {code} after {ran:.1f} s{said}; "
            f"restarting it in {delay:.0f} s"
        )
        child.restart_at = now + delay

    def _start(self, child: Child) -> None:
        # Its own session: a terminal's Ctrl-C reaches `serve` only, which then stops it in order (warm
        # shutdown, then a kill after the grace period) instead of both racing to exit.
        child.process = subprocess.Popen(
            child.argv,
            env=child.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        reader = threading.Thread(
            target=self._forward, args=(child, child.process.stdout), name=f"{child.name}-output", daemon=True
        )
        reader.start()
        child.readers = [reader]

    def _forward(self, child: Child, stream: IO[bytes] | None) -> None:
        """Copy the child's output to ours line by line, remembering its last non-empty line."""
        if stream is None:
            return
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip()
                if line.strip():
                    child.last_line = line.strip()
                self._say(line)

    def _say(self, line: str) -> None:
        with self._out_lock, contextlib.suppress(ValueError, OSError):
            self.out.write(line + "\n")
            self.out.flush()

    # --- stopping ---------------------------------------------------------------------------------

    def stop(self, grace_s: float) -> None:
        """Warm shutdown for all children at once (SIGTERM: Celery lets the running job finish), so the
        grace period is shared rather than served in turn; past it, each child's group is killed."""
        self._stopping.set()
        if self.is_alive():
            self.join(5.0)
        running = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(f"stylegan serve: worker still busy after {grace_s:.0f}s, killing it")
                # The whole group: the pool's children too. Its job is re-run once the lease expires.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for child in self.children:
            for reader in child.readers:
                reader.join(2.0)
