"""The `stylegan` command: gan/cli.py's library commands plus `serve`, `worker` and `migrate`.

`serve` is the one-command service: migrations, the embedded broker when no broker URL is set, one real
worker process (`python -m worker`, the same code a GPU node runs) and the HTTP API in this process.
Heavy modules (uvicorn, SQLAlchemy, Celery) are imported inside the handlers so `stylegan --help` and
the gan commands stay quick.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from gan.cli import build_parser, run

if TYPE_CHECKING:
    import uvicorn

    from worker.settings import Settings
    from worker.supervisor import Child

QUEUES = ("inference", "training")
# Celery's warm shutdown lets the running task finish; a probe or an inference batch ends well within
# this, and a training job checkpoints on cancel. Past it the worker is killed and its job is re-run
# from its lease (acks_late), so nothing is lost, only repeated.
WORKER_GRACE_SECONDS = 30.0


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 1..65535, got {value}")
    return value


def _queues(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in QUEUES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown queue {', '.join(map(repr, unknown or [text]))}; choose from {', '.join(QUEUES)}"
        )
    return list(dict.fromkeys(names))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _data_dir(text: str) -> Path:
    path = Path(text).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"--data-dir {text!r} exists and is not a directory")
    return path


def add_service_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = subparsers.add_parser(
        "serve",
        help="run the HTTP API with an inference and a training worker process (embedded database and "
        "broker unless configured)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000)")
    serve.add_argument("--data-dir", type=_data_dir, help="data directory (sets STYLEGAN_DATA_DIR)")
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="serve the API only; jobs wait in the broker for a `stylegan worker` elsewhere",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=_seconds,
        default=WORKER_GRACE_SECONDS,
        metavar="SECONDS",
        help=f"on stop, how long the worker may finish its job before it is killed (default {WORKER_GRACE_SECONDS:.0f})",
    )
    serve.set_defaults(handler=_serve)

    worker = subparsers.add_parser("worker", help="run a Celery worker for the configured broker")
    worker.add_argument(
        "--queues", type=_queues, default=list(QUEUES), help="comma-separated: inference,training"
    )
    worker.add_argument(
        "--concurrency",
        type=_positive,
        default=None,
        help="parallel jobs (default 1; `--queues inference` alone runs a threads pool so that sampling "
        "requests are batched, default STYLEGAN_INFERENCE_CONCURRENCY or max_batch + 2)",
    )
    worker.add_argument("--hostname", default=None, help="Celery node name (default: generated)")
    worker.set_defaults(handler=_worker)

    migrate = subparsers.add_parser("migrate", help="upgrade the database schema to the latest revision")
    migrate.set_defaults(handler=_migrate)


def _load_settings() -> Settings:
    """The settings from the environment; an invalid value is one line and exit code 2."""
    from pydantic import ValidationError

    from worker.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        name = f"STYLEGAN_{field.upper()}" if field else "settings"
        sys.stderr.write(f"stylegan: error: {name}: {first['msg']}\n")
        raise SystemExit(2) from None


def _migrate(args: argparse.Namespace) -> int:
    from worker.db.migrate import upgrade_head

    settings = _load_settings()
    upgrade_head(settings.effective_database_url)
    sys.stderr.write("stylegan migrate: database is at the latest revision\n")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from worker.runner import WorkerSetupError, run_worker

    settings = _load_settings()
    try:
        run_worker(settings, queues=args.queues, concurrency=args.concurrency, hostname=args.hostname)
    except WorkerSetupError as exc:
        sys.stderr.write(f"stylegan worker: error: {exc}\n")
        return 2
    return 0


def _serve(args: argparse.Namespace) -> int:
    from worker.db.migrate import upgrade_head
    from worker.embedded import EmbeddedBroker, EmbeddedBrokerError
    from worker.supervisor import DataDirBusy, DataDirLock, Supervisor

    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        # The worker child reads its settings from the same environment.
        os.environ["STYLEGAN_DATA_DIR"] = str(args.data_dir)
    settings = _load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    stopper = _Stopper()
    with _handling_signals(stopper), contextlib.ExitStack() as stack:
        # One `serve` per data directory: a second one would start a second broker and second workers.
        lock = DataDirLock(settings.data_dir)
        try:
            lock.acquire()
        except DataDirBusy as exc:
            sys.stderr.write(f"stylegan serve: error: {exc}\n")
            return 2
        stack.callback(lock.release)
        upgrade_head(settings.effective_database_url)
        _register_demo_model(settings)
        if settings.broker_url is None:
            # The worker child finds this broker through the same data directory (its state file), so
            # the URL, which carries the broker's password, never goes into the environment.
            broker = EmbeddedBroker(settings.data_dir)
            if broker.shutdown_leftover():
                sys.stderr.write("stylegan serve: stopped an embedded broker left by an earlier serve\n")
            try:
                broker.start(die_with_us=True)
            except EmbeddedBrokerError as exc:
                sys.stderr.write(f"stylegan serve: error: {exc}\n")
                return 1
            stack.callback(broker.stop)
            sys.stderr.write(f"stylegan serve: embedded broker running under {broker.dir}\n")
        if not args.no_worker:
            # Two workers, so that sampling never waits behind training: the inference queue in a
            # threads pool (its requests batch in one process, see worker/runner.pool_for) and the
            # training queue in one prefork child. Both are restarted when they exit and stopped
            # together on the way out; they exit by themselves if this process is killed.
            supervisor = Supervisor(
                [_worker_child("inference"), _worker_child("training")],
                on_give_up=stopper.give_up,
                out=sys.stderr,
            )
            supervisor.start()
            supervisor.wait_started()
            stack.callback(supervisor.stop, args.shutdown_grace)

        from api.app import create_app

        server = _make_server(create_app(settings), settings, args.host, args.port)
        stopper.server = server
        if not stopper.requested:
            server.run()
            if not server.started:
                return 1  # bind failure (port in use) and the like: uvicorn already said why
    return 1 if stopper.failure else 0


def _register_demo_model(settings: Settings) -> None:
    """Register the bundled demo model once (worker/demo_model.py); a no-op when the file is absent or
    already registered. A demo that fails to import is reported and the service starts without it."""
    from worker.db.session import make_engine, make_session_factory
    from worker.demo_model import bundled_demo_path, ensure_demo_model
    from worker.model_import import ImportLimits, ModelImportError, scratch_dir
    from worker.storage import make_storage

    path = bundled_demo_path()
    if path is None:
        return
    engine = make_engine(settings.effective_database_url)
    try:
        ensure_demo_model(
            make_session_factory(engine),
            make_storage(settings),
            path,
            scratch=scratch_dir(settings),
            limits=ImportLimits.from_settings(settings),
        )
    except ModelImportError as exc:
        sys.stderr.write(f"stylegan serve: the demo model {path.name} was not registered: {exc}\n")
    finally:
        engine.dispose()


# The two workers of `serve` share one machine: each gets half its cores for torch's CPU threads unless
# OMP_NUM_THREADS says otherwise. A process's OpenMP threads wait for each other at every parallel step,
# so when other work deschedules one of them, all of them stall: on a 2-core machine shared with other
# work, a small training job made 1.1 images/s with torch's default (every core) and 38 images/s with
# one thread, and 0.3 against 11.6 images/s under 1000 sampling users (tests/hardening/test_load.py).
WORKER_SHARE_OF_CORES = 2


def _worker_child(queue: str) -> Child:
    from worker.supervisor import Child

    argv = [sys.executable, "-m", "worker", "--queues", queue, "--parent-pid", str(os.getpid())]
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // WORKER_SHARE_OF_CORES))
    return Child(name=queue, argv=argv, env=env)


def _make_server(app: object, settings: Settings, host: str, port: int) -> uvicorn.Server:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn re-raises a captured SIGINT/SIGTERM once it stops, which would end this process
        before the worker and broker are shut down, and with a signal's exit code instead of 0; in
        `serve`, `_Stopper` owns the signals instead."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    from api.access_log import uvicorn_log_config
    from api.server import server_config

    # The app writes one access line per request with its route template (api/access_log.py); the
    # protocol bounds request heads and reads (api/server.py).
    config = server_config(app, settings, host, port, access_log=False, log_config=uvicorn_log_config())
    return QuietServer(config)


class _Stopper:
    """SIGINT/SIGTERM handler for the whole of `serve`: asks uvicorn to stop; a second Ctrl-C stops it
    without waiting for open connections. Signals during the shutdown that follows are absorbed, so
    the worker and broker always get their orderly stop."""

    def __init__(self) -> None:
        self.requested = False
        self.failure: str | None = None
        self.server: uvicorn.Server | None = None

    def give_up(self, reason: str) -> None:
        """A part of the service cannot run (a worker that keeps dying at start): stop, exit non-zero."""
        self.failure = reason
        self(signal.SIGTERM, None)

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        server = self.server
        if server is not None:
            if self.requested and signum == signal.SIGINT:
                server.force_exit = True
            server.should_exit = True
        self.requested = True


@contextlib.contextmanager
def _handling_signals(handler: _Stopper) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(add_service_commands), argv)


if __name__ == "__main__":
    raise SystemExit(main())
