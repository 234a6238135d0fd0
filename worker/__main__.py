"""`python -m worker --queues inference,training`: a worker without the `stylegan` command (tests,
`stylegan serve`'s embedded worker, and GPU nodes that do not install the API)."""

from __future__ import annotations

import argparse
import sys

from gan.host_memory import keep_freed_memory
from worker.runner import WorkerSetupError, run_worker
from worker.settings import get_settings
from worker.supervisor import exit_with_parent


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # before Celery starts its threads (see gan.host_memory)
    parser = argparse.ArgumentParser(prog="python -m worker", description="Run a StyleGAN service worker.")
    parser.add_argument("--queues", default="inference,training", help="comma-separated: inference,training")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="jobs run at once (default: 1; for --queues inference alone, which runs in threads so that "
        "sampling requests batch, STYLEGAN_INFERENCE_CONCURRENCY or max_batch + 2)",
    )
    parser.add_argument("--hostname", default=None, help="Celery node name (unique per broker)")
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="exit, with the pool's children, as soon as this process is gone (`stylegan serve` sets it)",
    )
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        exit_with_parent(args.parent_pid)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    try:
        run_worker(get_settings(), queues, concurrency=args.concurrency, hostname=args.hostname)
    except WorkerSetupError as exc:
        sys.stderr.write(f"worker: error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
