"""Service speed: HTTP sampling from a running `stylegan serve` against the bare generator's own rate.

    python bench/bench_service.py [--levels 1,2,4,8,16] [--seconds 10] [--json service.json]
    python bench/bench_service.py --model ffhq.pkl            # any file the service imports
    python bench/bench_service.py --arch stylegan2 --res 256  # random weights, official config

It starts `stylegan serve` on the embedded default (SQLite, the embedded Redis broker, the inference and
training worker processes) with a data directory in a temp folder, registers the model (the bundled
demo model unless --model or --arch/--res say otherwise), and then, for each concurrency level, runs
that many client threads that each ask `GET /v1/models/{id}/images/{seed}.png` back to back (a new seed
every request, so nothing is served from a cache) for --seconds. Per level it reports img/s, p50/p99
latency, the forward-pass sizes the micro-batcher formed (`X-Batch-Size`), and where a request's time
went, from the `Server-Timing` header the API sends with each image:

    batch-wait  in the worker, from the row's arrival at the micro-batcher to its forward pass starting
                (waiting for companions, and for the pass before it to finish)
    synthesis   the forward pass of its batch (z was mapped to w before; the pixels leave as uint8)
    encode      PNG encoding of this image
    worker      the whole request inside the worker (model lookup, mapping, the three above, reply)
    broker      the API's call minus the worker's time: publish, the worker picking the message up, the
                result written to and polled from Redis, JSON and base64 both ways
    inference   the API's whole wait for the worker (worker + broker)
    api         what the client waited minus the API's call: HTTP, routing, the model row, auth, limits

Beside it, in the same process right after each level (while the service idles, so the two never
share the CPU and the machine's load has had little time to drift), the same model file, loaded with
the library (`gan.io.checkpoint.load_network`, `gan.sampling.Sampler`), is timed at the batch size the
service formed at that level: seeds -> ws -> uint8 images, with and without the same PNG encoding. The ratio service img/s / bare img/s (PNG on, at the batch size the service formed) is the
service's efficiency; the goal (issue 14) is >= 0.8 at saturation, the highest level.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from bench_generate import generator_config
from common import environment, parse_device

from gan.generator import build_generator
from gan.host_memory import keep_freed_memory
from gan.io.checkpoint import load_network, save_generator
from gan.sampling import Sampler
from worker.demo_model import bundled_demo_path
from worker.inference.render import encode_image
from worker.settings import Settings

STYLEGAN = Path(sys.executable).with_name("stylegan")
PHASES = ("batch-wait", "synthesis", "encode", "worker", "broker", "api", "inference")
TABLE_PHASES = PHASES[:-1]  # inference = worker + broker
# The service refuses sampling past its in-flight cap (503), which may be at most 32 (worker/settings.py).
MAX_LEVEL = 32


# --- the service ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """`stylegan serve` in its own process group on a free loopback port; its log goes to a file."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.with_name("serve.log")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(STYLEGAN), "serve", "--port", str(self.port), "--data-dir", str(data_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
            )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"stylegan serve exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            time.sleep(0.3)
        raise SystemExit(f"stylegan serve not ready in {timeout:g} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextlib.contextmanager
def serving(data_dir: Path, env: dict[str, str], timeout: float = 180.0) -> Iterator[Serve]:
    server = Serve(data_dir, env)
    try:
        server.wait_ready(timeout)
        yield server
    finally:
        server.stop()


def service_env(args: argparse.Namespace) -> dict[str, str]:
    """Settings for the bench's service: limits out of the way, the batcher as asked."""
    env = {
        "STYLEGAN_INFERENCE_DEVICE": args.device,
        # The token bucket would turn a sweep into a test of the rate limit (default 20/s per key).
        "STYLEGAN_SAMPLE_RATE_PER_SECOND": "1000000",
        "STYLEGAN_SAMPLE_BURST": "1000000",
        "STYLEGAN_SAMPLE_MAX_IN_FLIGHT": str(MAX_LEVEL),
        # serve gives each worker half the cores unless OMP_NUM_THREADS is set (api/cli.py).
        "OMP_NUM_THREADS": str(args.threads),
    }
    if args.max_batch is not None:
        env["STYLEGAN_MAX_BATCH"] = str(args.max_batch)
    if args.max_wait_ms is not None:
        env["STYLEGAN_INFERENCE_MAX_WAIT_MS"] = str(args.max_wait_ms)
    return env


def model_id_for(url: str, path: Path | None) -> str:
    """The demo model's id (path None), or the id of `path` uploaded to the service."""
    if path is None:
        models = httpx.get(f"{url}/v1/models", timeout=30).raise_for_status().json()["items"]
        demo = [m for m in models if m["demo"]]
        if not demo:
            raise SystemExit("the service registered no demo model (no file under worker/assets/demo)")
        return str(demo[0]["id"])
    with path.open("rb") as f:
        answer = httpx.post(f"{url}/v1/models", files={"file": (path.name, f)}, timeout=600)
    if answer.status_code not in (200, 201):
        raise SystemExit(f"uploading {path} failed: {answer.status_code} {answer.text[:500]}")
    return str(answer.json()["id"])


# --- one concurrency level ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    started: float
    finished: float
    status: int
    batch_size: int
    phases_ms: dict[str, float]


def parse_server_timing(header: str | None) -> dict[str, float]:
    """`Server-Timing: synthesis;dur=41.2, encode;dur=1.3` -> {"synthesis": 41.2, "encode": 1.3} (ms)."""
    out: dict[str, float] = {}
    for entry in (header or "").split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if name and key == "dur":
                out[name] = float(value)
    return out


def image_url(base: str, model_id: str, seed: int, psi: float) -> str:
    return f"{base}/v1/models/{model_id}/images/{seed}.png?psi={psi}"


def client_loop(
    base: str, model_id: str, psi: float, first_seed: int, until: float, out: list[Sample]
) -> None:
    """One client: requests back to back until `until`, each for a seed never asked before."""
    seed = first_seed
    with httpx.Client(timeout=120) as client:
        while time.perf_counter() < until:
            started = time.perf_counter()
            answer = client.get(image_url(base, model_id, seed, psi))
            finished = time.perf_counter()
            seed += 1
            phases = parse_server_timing(answer.headers.get("server-timing"))
            if answer.status_code == 200 and "inference" in phases:
                phases["api"] = (finished - started) * 1e3 - phases["inference"]
            out.append(
                Sample(
                    started,
                    finished,
                    answer.status_code,
                    int(answer.headers.get("x-batch-size", 0)),
                    phases,
                )
            )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def drive(
    base: str, model_id: str, clients: int, first_seed: int, args: argparse.Namespace
) -> tuple[list[Sample], tuple[float, float]]:
    """`clients` threads for --level-warmup + --seconds: every answer, and the measured window."""
    start = time.perf_counter()
    window = (start + args.level_warmup, start + args.level_warmup + args.seconds)
    per_client: list[list[Sample]] = [[] for _ in range(clients)]
    threads = [
        threading.Thread(
            target=client_loop,
            args=(base, model_id, args.psi, first_seed + i * 10_000, window[1], per_client[i]),
        )
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [s for client in per_client for s in client], window


def run_level(
    base: str, model_id: str, clients: int, sampler: Sampler, args: argparse.Namespace
) -> dict[str, Any]:
    """--rounds rounds of (the service under `clients` clients, then the bare generator at the batch size
    the service formed): on a shared machine the load drifts, and a ratio taken per round of two figures
    measured seconds apart cancels most of it, where a bare figure from minutes away would not."""
    rounds, timed, failed = [], [], Counter[int]()
    for r in range(args.rounds):
        samples, window = drive(base, model_id, clients, ((r * 64 + clients) * 64) * 10_000, args)
        failed.update(s.status for s in samples if s.status != 200)
        ok = [s for s in samples if s.status == 200]
        done = [s for s in ok if window[0] <= s.finished <= window[1]]  # throughput: completions in it
        whole = [s for s in ok if window[0] <= s.started and s.finished <= window[1]]  # latency: whole in it
        if not whole:
            raise SystemExit(f"{clients} clients: no request completed inside the window; raise --seconds")
        batch = max(1, int(statistics.median(s.batch_size for s in whole)))
        bare = bare_rates(sampler, batch, args)
        img_per_s = len(done) / args.seconds
        rounds.append({"img_per_s": img_per_s, "bare": bare, "ratio": img_per_s / bare["png"]["img_per_s"]})
        timed += whole
    latencies = [(s.finished - s.started) * 1e3 for s in timed]
    images_by_batch = Counter(s.batch_size for s in timed)
    ratios = [r["ratio"] for r in rounds]
    return {
        "clients": clients,
        "rounds": rounds,
        "img_per_s": statistics.median(r["img_per_s"] for r in rounds),
        "ratio_service_over_bare_png": {
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
        },
        "failed": dict(failed),
        "latency_ms": {
            "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99),
            "n": len(timed),
        },
        # An image of a batch of b is one of its b rows: images per size / size = batches of that size.
        "images_by_batch_size": dict(sorted(images_by_batch.items())),
        "batches_by_size": {b: round(n / b, 1) for b, n in sorted(images_by_batch.items())},
        "batch_size_per_image": {
            "median": statistics.median(s.batch_size for s in timed),
            "mean": statistics.fmean(s.batch_size for s in timed),
        },
        "phases_ms_mean": {
            phase: statistics.fmean(values)
            for phase in PHASES
            if (values := [s.phases_ms[phase] for s in timed if phase in s.phases_ms])
        },
    }


# --- the bare generator ---------------------------------------------------------------------------------


def bare_rates(sampler: Sampler, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """seeds -> ws -> uint8 images at `batch` rows a pass, PNG off and on: img/s, median of calls."""
    seeds = list(range(batch))

    def images() -> Any:
        ws = sampler.ws_for_seeds(seeds, psi=args.psi)
        return sampler.images_from_ws(ws, noise_mode="const", batch_size=batch)

    def with_png() -> None:
        for image in images():
            encode_image(image, "png")

    out: dict[str, Any] = {"batch": batch}
    for name, fn in (("no_encoding", images), ("png", with_png)):
        seconds = call_seconds(fn, args.bare_seconds)
        out[name] = {"s_per_call": seconds, "img_per_s": batch / statistics.median(seconds)}
    return out


def call_seconds(fn: Callable[[], Any], budget_s: float, min_calls: int = 3) -> list[float]:
    """One warm-up call, then calls until `budget_s` has passed (at least `min_calls`): seconds each."""
    fn()
    seconds: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(seconds) < min_calls or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


# --- the model ------------------------------------------------------------------------------------------


def model_file(args: argparse.Namespace, scratch: Path) -> tuple[Path, str]:
    """The generator file both sides load, and how to name it in the table."""
    if args.model is not None:
        return args.model, args.model.name
    if args.arch is not None:
        config = generator_config(args.arch, args.res, False, args.cbase, args.cmax, args.map)
        torch.manual_seed(args.seed)
        path = save_generator(build_generator(config), scratch / f"random-{args.arch}-{args.res}.safetensors")
        return path, f"{args.arch} {args.res} px, random weights"
    demo = bundled_demo_path()
    if demo is None:
        raise SystemExit("no bundled demo model (worker/assets/demo): pass --model or --arch")
    return demo, f"demo ({demo.stem})"


# --- output ---------------------------------------------------------------------------------------------


def markdown_rows(result: dict[str, Any]) -> list[str]:
    rows = []
    for level in result["levels"]:
        phases = level["phases_ms_mean"]
        where = " / ".join(f"{phases[p]:.1f}" if p in phases else "—" for p in TABLE_PHASES)
        batches = ", ".join(f"{b}: {n:g}" for b, n in level["batches_by_size"].items())
        bare = [r["bare"] for r in level["rounds"]]
        bare_batches = "/".join(sorted({str(b["batch"]) for b in bare}))
        no_png = statistics.median(b["no_encoding"]["img_per_s"] for b in bare)
        png = statistics.median(b["png"]["img_per_s"] for b in bare)
        ratio = level["ratio_service_over_bare_png"]
        rows.append(
            f"| {level['clients']} | {level['img_per_s']:.2f} | {level['latency_ms']['p50']:.0f} "
            f"| {level['latency_ms']['p99']:.0f} | {level['batch_size_per_image']['mean']:.1f} ({batches}) "
            f"| {where} | {bare_batches}: {no_png:.2f} / {png:.2f} "
            f"| {ratio['median']:.2f} [{ratio['min']:.2f}-{ratio['max']:.2f}] |"
        )
    return rows


TABLE_HEAD = (
    "| clients | service img/s | p50 ms | p99 ms | batch size, mean per image (batches by size) "
    "| mean ms: batch-wait / synthesis / encode / worker / broker / api "
    "| bare batch: img/s no PNG / PNG | service / bare (PNG), median [range] of rounds |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- |"
)


# --- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", default="1,2,4,8,16", help="concurrent clients per level, comma-separated")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per level and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds per level (service, then bare)")
    p.add_argument("--level-warmup", type=float, default=2.0, help="unmeasured seconds at each level's start")
    p.add_argument(
        "--bare-seconds", type=float, default=5.0, help="timed seconds per bare batch size and mode"
    )
    p.add_argument(
        "--model", type=Path, help="a generator file (ours or an official .pkl); default: the demo"
    )
    p.add_argument("--arch", choices=("stylegan2", "stylegan3-t", "stylegan3-r"), help="random weights")
    p.add_argument("--res", type=int, default=256, help="with --arch")
    p.add_argument("--cbase", type=int, help="with --arch: channel_base (default: the official config)")
    p.add_argument("--cmax", type=int, help="with --arch: channel_max (default: the official config)")
    p.add_argument("--map", type=int, help="with --arch: mapping layers (default: the official config)")
    p.add_argument("--psi", type=float, default=0.7)
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=max(1, len(os.sched_getaffinity(0)) // 2),
        help="torch CPU threads of the inference worker and of the bare generator "
        "(default: half the cores, as `stylegan serve` gives each of its workers)",
    )
    p.add_argument("--max-batch", type=int, help="STYLEGAN_MAX_BATCH for the service (default: its own)")
    p.add_argument("--max-wait-ms", type=float, help="STYLEGAN_INFERENCE_MAX_WAIT_MS (default: its own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if args.model is not None and args.arch is not None:
        p.error("--model and --arch are two ways to name the model: give one")
    args.level_list = [int(x) for x in args.levels.split(",")]
    if not all(1 <= n <= MAX_LEVEL for n in args.level_list):
        p.error(f"--levels: each level must be 1..{MAX_LEVEL} (the service's in-flight cap)")
    return args


@dataclass
class Run:
    env: dict[str, Any]
    settings: dict[str, Any]
    levels: list[dict[str, Any]] = field(default_factory=list)


def main(argv: list[str] | None = None) -> int:
    # As `stylegan serve`'s worker does at its start: the bare side gets the same malloc settings, so the
    # ratio compares the service with the generator at its best, not with a page-faulting one.
    keep_freed_memory()
    args = parse_args(argv)
    device = parse_device(args.device)
    torch.set_num_threads(args.threads)
    env = service_env(args)
    defaults = Settings()
    settings = {
        "model": "",
        "levels": args.level_list,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "level_warmup": args.level_warmup,
        "psi": args.psi,
        "format": "png",
        "threads": args.threads,
        "max_batch": args.max_batch or defaults.max_batch,
        "inference_max_wait_ms": args.max_wait_ms
        if args.max_wait_ms is not None
        else defaults.inference_max_wait_ms,
    }
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        path, settings["model"] = model_file(args, Path(tmp))
        run = Run(environment(device), settings)
        print(json.dumps({"environment": run.env, "settings": settings}, indent=1), file=sys.stderr)
        sampler = Sampler(load_network(path), device=device)
        with serving(Path(tmp) / "data", env) as server:
            uploaded = args.model is not None or args.arch is not None
            model_id = model_id_for(server.url, path if uploaded else None)
            # The worker loads the model on its first request: not part of any level.
            httpx.get(image_url(server.url, model_id, 0, args.psi), timeout=600).raise_for_status()
            for clients in args.level_list:
                level = run_level(server.url, model_id, clients, sampler, args)
                run.levels.append(level)
                print(f"level {clients}: {json.dumps(level)}", file=sys.stderr, flush=True)
    result = {"environment": run.env, "settings": settings, "levels": run.levels}
    print(TABLE_HEAD)
    for row in markdown_rows(result):
        print(row, flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
