"""Cold start: an official StyleGAN2 network pickle to the first PNG, in a fresh process, ours and official.

    python bench/bench_cold_start.py --official-repo ~/src/stylegan3 [--device cuda] [--json out.json]

A network snapshot is made first, as NVIDIA's training loop writes one (`network-snapshot-*.pkl`: a dict
of G, D, G_ema, augment_pipe and training_set_kwargs, pickled with their `persistence` module), by the
official code with random weights at the official configuration (stylegan3 `train.py --cfg stylegan2`:
channel base 32768, max 512, 8 mapping layers, fp16 in the top 4 resolutions with conv_clamp 256, ADA's
bgc pipe), 1024 px unless --res says otherwise. Then, --reps times, each of these runs in its own new
Python process (order rotated per repetition):

- `official`: their `legacy.load_network_pkl(f)['G_ema']` (which executes the source code stored in the
  pickle) and a forward as their `gen_images.py` (seed 0, psi 0.7, noise const), PNG written with PIL;
- `ours-pkl`: our allowlisted reader (`gan.io.official_pickle.load_official_networks`, G_ema only), our
  `Sampler` (what the service samples with), the same seed, psi and noise, PNG written with PIL;
- `ours-st`: the inference worker's cold start: our safetensors file (converted once from the pickle by
  the service's import child, below) read by `gan.io.checkpoint.load_generator`, then as `ours-pkl`;
- `import`: the service's model import itself (`python -m worker.inspect_model`: pickle -> safetensors,
  under the import limits), which the service runs once per uploaded file, not per start.

Each child reports its stages (interpreter start, library imports, network load, first forward at batch
1, PNG encode and write) measured with `time.perf_counter` inside it; wall = from just before the parent
starts the child to the moment the child has written its PNG. The files are read once before timing, so
every run finds them in the page cache (a disk-cold start adds the disk's read time on both sides).
The PNGs of `official` and `ours-*` are compared pixel for pixel.

Heavy imports (torch, gan, the official code) are done inside functions: a child's import time is one of
the figures, so this module must import nothing heavy before the child starts its clock.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SIDES = ("official", "ours-pkl", "ours-st")
STAGES = ("interpreter", "imports", "load", "first_forward", "png")
TABLE_HEAD = (
    "| side | wall to PNG, median [range] | interpreter | imports | load | first forward | PNG "
    "| second forward (not in the wall) | peak RSS |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)
SEED, PSI = 0, 0.7


def _now() -> float:
    return time.perf_counter()


# -- the snapshot, written by the official code ------------------------------------------------------


def make_snapshot(repo: Path, path: Path, res: int, cbase: int, cmax: int, map_layers: int) -> None:
    """An official `network-snapshot` pickle with random weights (runs the official code: run it in a
    child process, which `ensure_snapshot` does)."""
    import copy
    import pickle

    import torch

    sys.path.insert(0, str(BENCH))
    from official import load_official  # the shims (pkg_resources) and the import of their packages

    code = load_official(repo, impl="ref")
    import dnnlib  # type: ignore[import-not-found]  # the official package, on sys.path now

    from gan.training.augment import AUGMENT_PRESETS

    torch.manual_seed(0)
    common = dict(c_dim=0, img_resolution=res, img_channels=3)
    # stylegan3 train.py --cfg stylegan2 (its defaults: fp16 top 4 resolutions, conv_clamp 256)
    G = code.networks_sg2.Generator(
        z_dim=512,
        w_dim=512,
        mapping_kwargs=dnnlib.EasyDict(num_layers=map_layers),
        channel_base=cbase,
        channel_max=cmax,
        fused_modconv_default="inference_only",
        **common,
    )
    D = code.networks_sg2.Discriminator(
        block_kwargs=dnnlib.EasyDict(freeze_layers=0),
        mapping_kwargs=dnnlib.EasyDict(),
        epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=4),
        channel_base=cbase,
        channel_max=cmax,
        **common,
    )
    G_ema = copy.deepcopy(G).eval()
    with torch.no_grad():  # a trained G_ema lags G; make them differ as in a real snapshot
        for p in G_ema.parameters():
            p.add_(torch.randn_like(p), alpha=1e-3)
    augment_pipe = code.augment.AugmentPipe(**AUGMENT_PRESETS["bgc"]).train().requires_grad_(False)
    augment_pipe.p.copy_(torch.as_tensor(0.2))
    training_set_kwargs = dnnlib.EasyDict(
        class_name="training.dataset.ImageFolderDataset",
        path="datasets/ffhq-1024x1024.zip",
        use_labels=False,
        max_size=70000,
        xflip=True,
        resolution=res,
        random_seed=0,
    )
    # As their training loop's snapshot: each module copied, eval, no grad, on the CPU; then pickle.dump.
    snapshot: dict[str, Any] = dict(
        G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe, training_set_kwargs=dict(training_set_kwargs)
    )
    for key, value in snapshot.items():
        if isinstance(value, torch.nn.Module):
            snapshot[key] = copy.deepcopy(value).eval().requires_grad_(False).cpu()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(snapshot, f)
    tmp.replace(path)


def ensure_snapshot(args: argparse.Namespace) -> Path:
    path: Path = args.pickle or args.workdir / f"network-snapshot-sg2-{args.res}-{args.cbase}-{args.cmax}.pkl"
    if not path.is_file():
        print(f"writing {path} with the official code ...", file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, __file__, "make-snapshot", str(args.official_repo), str(path),
             str(args.res), str(args.cbase), str(args.cmax), str(args.map)],
            check=True, env=_child_env(args),
        )  # fmt: skip
    return path


# -- the children ---------------------------------------------------------------------------------------


def child(side: str, network: Path, png: Path, device_name: str, repo: Path | None, t_spawn: float) -> None:
    """One cold start; prints one JSON line of stage times. `t_spawn`: the parent's clock (wall time)
    just before it started this process."""
    t0 = _now()
    interpreter = time.time() - t_spawn
    stages: dict[str, float] = {"interpreter": interpreter}
    run = _official_side(repo, stages) if side == "official" else _our_side(side, stages)
    t_png_written, extra = run(network, png, device_name)
    stages["wall_to_png"] = interpreter + (t_png_written - t0)
    extra["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"side": side, "stages": stages, **extra}), flush=True)


def _timed(stages: dict[str, float], name: str, start: float) -> float:
    end = _now()
    stages[name] = end - start
    return end


def _our_side(side: str, stages: dict[str, float]) -> Any:
    t = _now()
    import numpy as np  # noqa: F401
    import torch
    from PIL import Image

    from gan.generator import Generator
    from gan.io.checkpoint import load_generator
    from gan.io.official_pickle import load_official_networks
    from gan.sampling import Sampler

    _timed(stages, "imports", t)

    def run(network: Path, png: Path, device_name: str) -> tuple[float, dict[str, Any]]:
        device = torch.device(device_name)
        t = _now()
        if side == "ours-pkl":
            G = load_official_networks(network, ("G_ema",))["G_ema"]
            assert isinstance(G, Generator)
        else:
            G = load_generator(network, device=device)
        sampler = Sampler(G, device=device)
        t = _timed(stages, "load", t)
        images = sampler.images([SEED], psi=PSI, noise_mode="const")  # uint8 [1, H, W, C], on the CPU
        t = _timed(stages, "first_forward", t)
        Image.fromarray(images[0], "RGB").save(png)
        done = _timed(stages, "png", t)
        t = _now()
        sampler.images([SEED], psi=PSI, noise_mode="const")
        _timed(stages, "second_forward", t)
        return done, {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}

    return run


def _official_side(repo: Path | None, stages: dict[str, float]) -> Any:
    assert repo is not None
    t = _now()
    import numpy as np
    import torch
    from PIL import Image

    sys.path.insert(0, str(repo))
    try:
        import pkg_resources  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:  # the stand-in bench/official.py registers (see bench/README.md, shims)
        import types

        from packaging.version import parse

        stand_in = types.ModuleType("pkg_resources")
        stand_in.parse_version = parse  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = stand_in
    import dnnlib  # noqa: F401
    import legacy  # type: ignore[import-not-found]

    _timed(stages, "imports", t)

    def forward(G: Any, device: torch.device) -> Any:
        # as their gen_images.py: z from the seed's RandomState, psi, const noise, their uint8 conversion
        z = torch.from_numpy(np.random.RandomState(SEED).randn(1, G.z_dim)).to(device)
        label = torch.zeros([1, G.c_dim], device=device)
        with torch.no_grad():
            img = G(z, label, truncation_psi=PSI, noise_mode="const")
        img = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        return img[0].cpu().numpy()

    def run(network: Path, png: Path, device_name: str) -> tuple[float, dict[str, Any]]:
        device = torch.device(device_name)
        t = _now()
        with open(network, "rb") as f:
            G = legacy.load_network_pkl(f)["G_ema"].to(device)
        t = _timed(stages, "load", t)
        image = forward(G, device)
        t = _timed(stages, "first_forward", t)
        Image.fromarray(image, "RGB").save(png)
        done = _timed(stages, "png", t)
        t = _now()
        forward(G, device)
        _timed(stages, "second_forward", t)
        return done, {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}

    return run


# -- the parent -----------------------------------------------------------------------------------------


def _child_env(args: argparse.Namespace) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    return env


def run_child(side: str, network: Path, png: Path, args: argparse.Namespace) -> dict[str, Any]:
    t_spawn = time.time()
    out = subprocess.run(
        [sys.executable, __file__, "child", side, str(network), str(png), args.device,
         str(args.official_repo), repr(t_spawn)],
        capture_output=True, text=True, env=_child_env(args), timeout=args.child_timeout,
    )  # fmt: skip
    exit_s = time.time() - t_spawn
    if out.returncode != 0:
        raise SystemExit(f"{side} child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_exit_s"] = exit_s
    return result


def run_import(network: Path, dst: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The service's import child (worker.inspect_model) at its default limits: pickle -> safetensors."""
    dst.unlink(missing_ok=True)
    t_spawn = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "worker.inspect_model", str(network), str(dst),
         "--memory-bytes", str(4 * 1024**3), "--cpu-seconds", "600"],
        capture_output=True, text=True, env=_child_env(args), cwd=ROOT, timeout=args.child_timeout,
    )  # fmt: skip
    wall = time.time() - t_spawn
    if out.returncode != 0:
        raise SystemExit(f"import child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return {"side": "import", "stages": {"wall_to_png": wall}, "process_exit_s": wall}


def _read_through(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def _png_diff(a: Path, b: Path) -> int:
    import numpy as np
    from PIL import Image

    x = np.asarray(Image.open(a), dtype=np.int16)
    y = np.asarray(Image.open(b), dtype=np.int16)
    return int(np.abs(x - y).max())


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median of each stage over repetitions, per side."""
    out: dict[str, dict[str, float]] = {}
    for side in sorted({r["side"] for r in runs}):
        mine = [r for r in runs if r["side"] == side]
        keys = sorted({k for r in mine for k in r["stages"]})
        out[side] = {k: statistics.median(r["stages"][k] for r in mine if k in r["stages"]) for k in keys}
        out[side]["process_exit_s"] = statistics.median(r["process_exit_s"] for r in mine)
    return out


def markdown_rows(summary: dict[str, dict[str, float]], runs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for side in (*SIDES, "import"):
        s = summary.get(side)
        if s is None:
            continue
        walls = [r["stages"]["wall_to_png"] for r in runs if r["side"] == side]
        band = f"{s['wall_to_png']:.2f} s [{min(walls):.2f}-{max(walls):.2f}]"
        cells = [f"{s[k]:.2f} s" if k in s else "—" for k in (*STAGES, "second_forward")]
        rss = [r.get("peak_rss_bytes", 0) for r in runs if r["side"] == side]
        mem = f"{statistics.median(rss) / 2**30:.2f} GB" if any(rss) else "—"
        rows.append(f"| {side} | {band} | {' | '.join(cells)} | {mem} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official-repo", type=Path, required=True, help="checkout of NVlabs/stylegan3")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--res", type=int, default=1024)
    p.add_argument("--cbase", type=int, default=32768)
    p.add_argument("--cmax", type=int, default=512)
    p.add_argument("--map", type=int, default=8)
    p.add_argument("--reps", type=int, default=3, help="repetitions; figures are medians")
    p.add_argument("--sides", default=",".join((*SIDES, "import")), help="comma-separated subset")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the children (default: torch's)")
    p.add_argument("--pickle", type=Path, help="use (or write) the snapshot here")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/stylegan-cold-start"))
    p.add_argument("--child-timeout", type=float, default=600.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    sides = [s for s in args.sides.split(",") if s]
    unknown = set(sides) - {*SIDES, "import"}
    if unknown:
        p.error(f"--sides: unknown {', '.join(sorted(unknown))}")
    args.workdir.mkdir(parents=True, exist_ok=True)

    import torch  # the parent's environment record only; the children import their own

    sys.path.insert(0, str(BENCH))
    from common import environment

    network = ensure_snapshot(args)
    st = args.workdir / f"{network.stem}.safetensors"
    if "ours-st" in sides and not st.is_file():
        run_import(network, st, args)  # the converted file the worker would load
    for path in (network, st):
        if path.is_file():
            _read_through(path)  # page cache warm for every side alike

    env = environment(torch.device(args.device))
    print(json.dumps({"environment": env}, indent=1), file=sys.stderr)
    runs: list[dict[str, Any]] = []
    for rep in range(args.reps):
        order = sides[rep % len(sides) :] + sides[: rep % len(sides)]
        for side in order:
            if side == "import":
                result = run_import(network, args.workdir / "import-check.safetensors", args)
            else:
                source = st if side == "ours-st" else network
                result = run_child(side, source, args.workdir / f"{side}-{rep}.png", args)
            result["rep"] = rep
            runs.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    summary = summarize(runs)
    diffs = {
        side: _png_diff(args.workdir / f"{side}-0.png", args.workdir / "official-0.png")
        for side in ("ours-pkl", "ours-st")
        if side in sides and "official" in sides
    }
    print(TABLE_HEAD)
    for line in markdown_rows(summary, runs):
        print(line, flush=True)
    print(f"max abs pixel difference against official: {diffs}", flush=True)
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(
            json.dumps(
                {
                    "environment": env,
                    "settings": settings,
                    "pickle_bytes": network.stat().st_size,
                    "safetensors_bytes": st.stat().st_size if st.is_file() else None,
                    "runs": runs,
                    "median": summary,
                    "png_max_abs_diff_vs_official": diffs,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        side, network, png, device_name, repo, t_spawn = sys.argv[2:8]
        child(side, Path(network), Path(png), device_name, Path(repo), float(t_spawn))
    elif len(sys.argv) > 1 and sys.argv[1] == "make-snapshot":
        repo, path, res, cbase, cmax, map_layers = sys.argv[2:8]
        make_snapshot(Path(repo), Path(path), int(res), int(cbase), int(cmax), int(map_layers))
    else:
        raise SystemExit(main())
