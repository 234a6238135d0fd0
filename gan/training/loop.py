"""The training loop: `train(options, callback) -> TrainResult`.

The schedule is the official one (stylegan2-ada-pytorch / stylegan3 `training_loop.py`): every
iteration draws one global batch of reals and latents and runs the phases Gmain, Greg, Dmain, Dreg (Greg
every 4th and Dreg every 16th iteration: lazy regularisation, StyleGAN2 Sec. 3.1), each phase splitting
its batch into micro-batches of `batch_gpu` per rank and accumulating gradients; then G_ema is updated and
every 4th iteration ADA adjusts p. A tick ends every `tick` kimg (and after the very first iteration); at
a tick we log, and every `snap` ticks write previews, metrics and a checkpoint. Between ticks the callback
gets a progress line every `progress_interval` seconds, and after every iteration it is asked whether to
stop; a stop ends the tick there, with previews and a final checkpoint (no metrics: a cancel must be quick).

Differences from the official loop, each on purpose:
- Micro-batch losses are scaled by 1 / (micro-batches per rank) and averaged across ranks, so the
  gradient is the mean over the global batch whatever the split (the official one grows with the number
  of accumulation rounds; Adam is almost invariant to that scale, our DDP test is not).
- Reals and latents come from streams that depend only on the seed and the position in the stream, and
  every rank takes its slice of the same global batch, so N ranks see exactly what 1 rank sees.
- Our checkpoints restore the kimg counter, augment p and the ADA state, optimizer moments and every RNG
  state, so a resumed run continues bit-exactly (the official code restarts kimg and p at 0).
"""

from __future__ import annotations

import os
import random
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gan.errors import ConfigError
from gan.metrics.compute import compute_metrics
from gan.metrics.detector import INCEPTION_URL, FeatureDetector, load_detector
from gan.training import checkpoint as ckpt_io
from gan.training.augment import AdaController, AugmentPipe
from gan.training.dataset import ImageDataset
from gan.training.distributed import (
    DistEnv,
    all_reduce_sum,
    average_gradients_,
    broadcast_module_,
    init_process_group,
    shutdown,
)
from gan.training.ema import ema_beta, update_ema
from gan.training.loss import Phase, StyleGANLoss, lazy_regularization_hyperparameters
from gan.training.networks import NetworkSetup, frozen_discriminator_layers, setup_networks
from gan.training.options import BatchSplit, TrainOptions, best_metric, split_batch
from gan.training.presets import TrainingPreset
from gan.training.progress import (
    NullCallback,
    StatAccumulator,
    StatsLog,
    TrainingCallback,
    grid_shape,
    progress_line,
    save_image_grid,
)

# `TrainOptions` lives in gan/training/options.py; it is re-exported here for worker/tasks/training.py,
# which imports it with `train` from this module.
__all__ = ["TrainOptions", "TrainResult", "sample_indices", "train"]


@dataclass
class TrainResult:
    outdir: Path
    kimg: float
    ticks: int
    stopped: bool  # ended by the callback's should_stop
    checkpoint: Path | None
    model: Path | None  # G_ema exported as a model file
    stats: dict[str, Any] = field(default_factory=dict)  # the last tick's line
    metrics: dict[str, float] = field(default_factory=dict)
    world_size: int = 1  # ranks in the process group that trained (1: a single process)


# Data streams -------------------------------------------------------------------------------------


def sample_indices(seed: int, num_items: int, start: int, count: int) -> np.ndarray:
    """Items `start .. start+count` of an endless stream of shuffled epochs (epoch e is a permutation
    drawn from RandomState([seed, e])): the stream is a pure function of the position, which is all a
    resumed run needs to continue it."""
    out = np.empty(count, dtype=np.int64)
    pos = start
    filled = 0
    while filled < count:
        epoch, offset = divmod(pos, num_items)
        perm = np.random.RandomState([seed % 2**32, epoch]).permutation(num_items)
        take = min(count - filled, num_items - offset)
        out[filled : filled + take] = perm[offset : offset + take]
        filled += take
        pos += take
    return out


class _BatchStream:
    """Batch sampler for a DataLoader: this rank's slice of each global batch, from position `start`."""

    def __init__(self, seed: int, num_items: int, start: int, batch: int, env: DistEnv) -> None:
        self.seed, self.num_items, self.start, self.batch, self.env = seed, num_items, start, batch, env

    def __iter__(self) -> Iterator[list[int]]:
        per_rank = self.batch // self.env.world_size
        pos = self.start
        while True:
            idx = sample_indices(self.seed, self.num_items, pos + self.env.rank * per_rank, per_rank)
            yield idx.tolist()
            pos += self.batch


# Augmentation -------------------------------------------------------------------------------------


class _Augment:
    """The ADA pipeline and its controller, or nothing (`--aug noaug`, or fixed p = 0)."""

    def __init__(self, options: TrainOptions, preset: TrainingPreset, device: torch.device) -> None:
        self.pipe: nn.Module | None = None
        self.controller: Any = None
        if options.aug == "noaug" or (options.aug == "fixed" and not options.p):
            return
        p = options.p if options.aug == "fixed" else 0.0
        pipe = AugmentPipe.from_preset(options.augpipe, p=p)
        self.pipe = pipe.train().requires_grad_(False).to(device)
        if options.aug == "ada":
            self.controller = AdaController(
                pipe, target=options.target, interval=preset.ada_interval, kimg=preset.ada_kimg
            )

    @property
    def p(self) -> float:
        return 0.0 if self.pipe is None else float(self.pipe.p)  # type: ignore[arg-type]

    def observe(self, real_logits: torch.Tensor) -> None:
        if self.controller is not None:
            self.controller.observe(real_logits)

    def step(self, batch_size: int, env: DistEnv, device: torch.device) -> None:
        if self.controller is None:
            return

        def all_reduce(t: torch.Tensor) -> None:  # NCCL reduces device tensors only
            t.copy_(all_reduce_sum(t.to(device), env).to(t.device))

        self.controller.step(batch_size, all_reduce if env.enabled else None)

    def state(self) -> dict[str, Any]:
        return {"p": self.p, "controller": None if self.controller is None else self.controller.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        if self.pipe is not None:
            with torch.no_grad():
                self.pipe.p.fill_(float(state["p"]))  # type: ignore[operator]
        if self.controller is not None and state.get("controller") is not None:
            self.controller.load_state_dict(state["controller"])


# Phases and process set-up -----------------------------------------------------------------------


@dataclass
class _PhaseSpec:
    name: Phase
    module: nn.Module
    opt: torch.optim.Optimizer
    interval: int
    params: list[torch.nn.Parameter]


def _make_phases(
    setup: NetworkSetup, frozen: list[str]
) -> tuple[list[_PhaseSpec], torch.optim.Optimizer, torch.optim.Optimizer]:
    preset = setup.preset
    phases: list[_PhaseSpec] = []
    opts = []
    for name, module, lr, reg_interval in (
        ("G", setup.G, preset.glr, preset.g_reg_interval),
        ("D", setup.D, preset.dlr, preset.d_reg_interval),
    ):
        params = (
            [p for n, p in module.named_parameters() if not any(n.startswith(f + ".") for f in frozen)]
            if name == "D"
            else list(module.parameters())
        )
        lr_c, betas_c = lazy_regularization_hyperparameters(lr, preset.betas, reg_interval)
        opt = torch.optim.Adam(params, lr=lr_c, betas=betas_c, eps=preset.eps)
        opts.append(opt)
        if reg_interval is None:
            phases.append(_PhaseSpec(f"{name}both", module, opt, 1, params))  # type: ignore[arg-type]
        else:
            phases.append(_PhaseSpec(f"{name}main", module, opt, 1, params))  # type: ignore[arg-type]
            phases.append(_PhaseSpec(f"{name}reg", module, opt, reg_interval, params))  # type: ignore[arg-type]
    return phases, opts[0], opts[1]


def _configure_determinism(options: TrainOptions, device: torch.device, env: DistEnv) -> None:
    if options.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # Official: TF32 off for numerical accuracy.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    _seed_everything(options.seed)  # networks are initialised alike whatever the number of ranks


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _pick_device(options: TrainOptions, env: DistEnv) -> torch.device:
    kind = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available")
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def _load_batch(dataset: Any, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[int(i)] for i in indices), strict=True)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))


# Metrics ------------------------------------------------------------------------------------------


def load_metrics_detector(options: TrainOptions, device: torch.device) -> FeatureDetector | None:
    """The Inception detector `--metrics` needs (None without metrics); raises if it cannot be had."""
    if not options.metrics:
        return None
    source = options.detector or INCEPTION_URL
    if "://" not in source and not Path(source).is_file():
        raise ConfigError(f"--detector {source}: no such file (the metrics in --metrics need it)")
    return load_detector(source, device=device)


def _evaluate_metrics(
    options: TrainOptions, G_ema: nn.Module, detector: FeatureDetector, device: torch.device
) -> dict[str, float]:
    results = compute_metrics(
        list(options.metrics),
        G=G_ema,
        data=Path(options.data),
        detector=detector,
        num_gen=options.metrics_num_gen,
        device=device,
    )
    return {k: float(v) for k, v in results.items()}


# The run and its state ----------------------------------------------------------------------------


class _Previews:
    """The preview grid: reals and fixed latents (seeds 0..n-1 as `gan.sampling.seed_to_z`), labels of
    the reals, rendered by G_ema with constant noise."""

    def __init__(self, dataset: ImageDataset, resolution: int, limit: int, z_dim: int) -> None:
        self.grid = grid_shape(resolution, limit)
        count = self.grid[0] * self.grid[1]
        idx = np.random.RandomState(0).permutation(len(dataset))[:count] % len(dataset)
        idx = np.resize(idx, count)
        self.reals, self.c = _load_batch(dataset, idx)
        self.z = torch.from_numpy(
            np.concatenate([np.random.RandomState(s).randn(1, z_dim) for s in range(len(idx))])
        ).float()

    def save_reals(self, path: Path) -> Path:
        return save_image_grid(self.reals.numpy(), path, self.grid, drange=(0, 255))

    def render(self, G_ema: nn.Module, path: Path, batch_gpu: int, device: torch.device) -> Path:
        with torch.no_grad():
            images = [
                G_ema(z.to(device), c.to(device), noise_mode="const").float().cpu()
                for z, c in zip(torch.split(self.z, batch_gpu), torch.split(self.c, batch_gpu), strict=True)
            ]
        return save_image_grid(torch.cat(images).numpy(), path, self.grid, drange=(-1, 1))


@dataclass
class _Run:
    """What `_setup` builds and stays fixed for the run (the objects in it hold their own state: the
    networks, optimizers, the path-length mean in `loss`, p and the ADA controller in `augment`)."""

    options: TrainOptions
    callback: TrainingCallback
    env: DistEnv
    device: torch.device
    detector: FeatureDetector | None
    outdir: Path
    dataset: ImageDataset
    c_dim: int
    setup: NetworkSetup
    split: BatchSplit
    phases: list[_PhaseSpec]
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    augment: _Augment
    loss: StyleGANLoss
    latents: torch.Generator  # z and generated labels, the same on every rank
    previews: _Previews
    stats_log: StatsLog | None  # rank 0 only
    data_iter: Iterator[Any]
    start_time: float
    total_nimg: int
    tick_nimg: int

    @property
    def preset(self) -> TrainingPreset:
        return self.setup.preset


@dataclass
class TrainState:
    """The counters and timers the steps pass on; with the objects' own state, what a checkpoint keeps."""

    cur_nimg: int = 0  # images shown to D so far, over all ranks
    cur_tick: int = 0
    batch_idx: int = 0  # iterations so far: the lazy-regularisation and ADA schedules count these
    data_pos: int = 0  # position in the stream of shuffled reals (`sample_indices`)
    tick_start_nimg: int = 0
    tick_start_time: float = 0.0
    last_progress_time: float = 0.0
    maintenance_sec: float = 0.0  # the last tick end's cost: stats, previews, metrics, checkpoint
    tick_stats: StatAccumulator = field(default_factory=StatAccumulator)
    last_stats: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    last_ckpt: Path | None = None
    stopped: bool = False  # ended by the callback's should_stop
    done: bool = False

    def counters(self) -> dict[str, int]:
        return {
            "cur_nimg": self.cur_nimg,
            "cur_tick": self.cur_tick,
            "batch_idx": self.batch_idx,
            "data_pos": self.data_pos,
        }


# Setup --------------------------------------------------------------------------------------------


def _load_dataset(options: TrainOptions) -> tuple[ImageDataset, int]:
    dataset = ImageDataset(options.data, use_labels=options.cond, xflip=options.mirror)
    if options.cond and not dataset.has_labels:
        raise ConfigError(f"--cond needs labels in {Path(options.data).name}'s dataset.json")
    return dataset, dataset.label_dim if options.cond else 0


def _make_loader(
    options: TrainOptions,
    dataset: ImageDataset,
    data_pos: int,
    batch: int,
    env: DistEnv,
    device: torch.device,
) -> Iterator[Any]:
    stream = _BatchStream(options.seed, len(dataset), data_pos, batch, env)
    workers = options.workers if options.workers is not None else (3 if device.type == "cuda" else 0)
    loader: torch.utils.data.DataLoader[Any] = torch.utils.data.DataLoader(
        dataset,  # type: ignore[arg-type]  # an ImageDataset is a map-style dataset, not a torch subclass
        batch_sampler=stream,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),  # keeps the loader from drawing on the global RNG
    )
    return iter(loader)


def _setup(
    options: TrainOptions,
    callback: TrainingCallback,
    env: DistEnv,
    device: torch.device,
    detector: FeatureDetector | None,
) -> tuple[_Run, TrainState]:
    """Networks, optimizers, data, augmentation and previews, and the state of a resumed run. The order
    of what draws random numbers is fixed: a resumed run and a fresh one must agree."""
    start_time = time.time()
    _configure_determinism(options, device, env)
    outdir = Path(options.outdir)
    if env.is_main:
        outdir.mkdir(parents=True, exist_ok=True)
    dataset, c_dim = _load_dataset(options)
    resolution = dataset.resolution

    # Networks and hyper-parameters.
    setup = setup_networks(options, resolution, c_dim, dataset.num_channels)
    preset = setup.preset
    # None (TF pickles): the whole micro-batch is one minibatch-std group.
    split = split_batch(options, preset.batch, env.world_size, setup.D_config.mbstd_group_size)
    # Per-rank streams for what each rank draws on its own (noise inputs, augmentation, mixing), as official.
    _seed_everything(options.seed * env.world_size + env.rank)
    G, D, G_ema = (m.to(device) for m in (setup.G, setup.D, setup.G_ema))
    G.train().requires_grad_(False)
    D.train().requires_grad_(False)
    G_ema.eval().requires_grad_(False)
    phases, opt_G, opt_D = _make_phases(setup, frozen_discriminator_layers(setup.D_config, options.freezed))
    augment = _Augment(options, preset, device)
    loss = StyleGANLoss(
        G, D, preset.loss_config(), augment_pipe=augment.pipe, device=device, observe_real=augment.observe
    )
    latents = torch.Generator().manual_seed(options.seed)

    # The exact state of a resumed run.
    state = TrainState()
    ckpt = setup.checkpoint
    if ckpt is not None:
        counters = ckpt.meta["counters"]
        state.cur_nimg, state.cur_tick = counters["cur_nimg"], counters["cur_tick"]
        state.batch_idx, state.data_pos = counters["batch_idx"], counters["data_pos"]
        ckpt_io.load_optimizer(opt_G, "opt_G", ckpt)
        ckpt_io.load_optimizer(opt_D, "opt_D", ckpt)
        loss.pl_mean.copy_(ckpt.tensors["loss.pl_mean"])
        augment.load_state(ckpt.meta["augment"])
    for module in (G, D, G_ema):
        broadcast_module_(module, env)

    previews = _Previews(dataset, resolution, options.preview_images, setup.G_config.z_dim)
    stats_log: StatsLog | None = None
    if env.is_main:
        previews.save_reals(outdir / "reals.png")
        if ckpt is None:
            callback.on_preview(previews.render(G_ema, outdir / "fakes_init.png", split.batch_gpu, device))
        stats_log = StatsLog(outdir / "stats.jsonl")
    data_iter = _make_loader(options, dataset, state.data_pos, split.batch, env, device)
    if ckpt is not None:
        ckpt_io.restore_rng_state(ckpt.meta["rng"], {"latents": latents})

    run = _Run(
        options=options,
        callback=callback,
        env=env,
        device=device,
        detector=detector,
        outdir=outdir,
        dataset=dataset,
        c_dim=c_dim,
        setup=setup,
        split=split,
        phases=phases,
        opt_G=opt_G,
        opt_D=opt_D,
        augment=augment,
        loss=loss,
        latents=latents,
        previews=previews,
        stats_log=stats_log,
        data_iter=data_iter,
        start_time=start_time,
        total_nimg=int(round(preset.kimg * 1000)),
        tick_nimg=int(round(options.tick * 1000)),
    )
    state.tick_start_nimg, state.tick_start_time = state.cur_nimg, time.time()
    state.last_progress_time = state.tick_start_time
    state.maintenance_sec = state.tick_start_time - start_time
    state.done = state.cur_nimg >= run.total_nimg
    return run, state


# One training step --------------------------------------------------------------------------------


def _draw_batch(
    run: _Run,
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
    """One global batch: this rank's reals and labels in micro-batches, and for every phase this rank's
    slice of the latents and generated labels ([phases, per_rank, z_dim], [phases, per_rank, c_dim])."""
    split, num_phases = run.split, len(run.phases)
    real_img, real_c = next(run.data_iter)
    real_imgs = torch.split(real_img.to(run.device).to(torch.float32) / 127.5 - 1, split.batch_gpu)
    real_cs = torch.split(real_c.to(run.device), split.batch_gpu)
    all_z = torch.randn([num_phases, split.batch, run.setup.G_config.z_dim], generator=run.latents)
    label_idx = torch.randint(len(run.dataset), [num_phases, split.batch], generator=run.latents)
    if run.c_dim:
        all_c = torch.from_numpy(np.stack([run.dataset.get_label(int(i)) for i in label_idx.flatten()]))
        all_c = all_c.view(num_phases, split.batch, run.c_dim)
    else:
        all_c = torch.zeros([num_phases, split.batch, 0])
    lo, hi = run.env.rank * split.per_rank, (run.env.rank + 1) * split.per_rank
    return real_imgs, real_cs, all_z[:, lo:hi].to(run.device), all_c[:, lo:hi].to(run.device)


def _run_phase(
    run: _Run,
    state: TrainState,
    phase: _PhaseSpec,
    real_imgs: tuple[torch.Tensor, ...],
    real_cs: tuple[torch.Tensor, ...],
    z: torch.Tensor,
    c: torch.Tensor,
) -> None:
    """One phase (Gmain, Greg, Dmain, Dreg or G/Dboth): gradients accumulated over the micro-batches,
    averaged across ranks, one optimizer step."""
    rounds, batch_gpu = run.split.rounds, run.split.batch_gpu
    phase.opt.zero_grad(set_to_none=True)
    for p in phase.params:
        p.requires_grad_(True)
    for r in range(rounds):
        stats = run.loss.accumulate_gradients(
            phase.name,
            real_imgs[r],
            real_cs[r],
            torch.split(z, batch_gpu)[r],
            torch.split(c, batch_gpu)[r],
            gain=phase.interval / rounds,
            cur_nimg=state.cur_nimg,
        )
        state.tick_stats.add(stats)
    phase.module.requires_grad_(False)
    average_gradients_(phase.params, run.env)
    phase.opt.step()


def _training_step(run: _Run, state: TrainState) -> None:
    """One iteration of the official loop: the phases due at this batch index, the G_ema update, the
    counters, and every `ada_interval` iterations the ADA adjustment of p."""
    real_imgs, real_cs, all_z, all_c = _draw_batch(run)
    for k, phase in enumerate(run.phases):
        if state.batch_idx % phase.interval == 0:
            _run_phase(run, state, phase, real_imgs, real_cs, all_z[k], all_c[k])
    preset, batch = run.preset, run.split.batch
    update_ema(
        run.setup.G_ema, run.setup.G, ema_beta(state.cur_nimg, batch, preset.ema_kimg, preset.ema_rampup)
    )
    state.cur_nimg += batch
    state.data_pos += batch
    state.batch_idx += 1
    run.augment.step(batch, run.env, run.device)


def _check_stop(run: _Run, state: TrainState) -> None:
    """Done, or asked to stop? Asked every iteration (the callback keeps it cheap) so that a cancel takes
    effect within one iteration, not at the next tick end, which can be many minutes away on a CPU."""
    state.done = state.cur_nimg >= run.total_nimg
    stop = not state.done and run.callback.should_stop()
    if run.env.enabled:  # rank 0 decides; NCCL reduces device tensors only
        stop = all_reduce_sum(torch.tensor([float(stop)], device=run.device), run.env).item() > 0
    if stop:
        state.done = state.stopped = True


def _tick_continues(run: _Run, state: TrainState) -> bool:
    """A tick ends every `--tick` kimg, after the very first iteration, and when the run is done."""
    return not state.done and state.cur_tick != 0 and state.cur_nimg < state.tick_start_nimg + run.tick_nimg


def _report_progress(run: _Run, state: TrainState, now: float) -> None:
    run.callback.on_progress(
        progress_line(
            state.cur_nimg, run.total_nimg, state.cur_tick, state.tick_start_nimg, state.tick_start_time, now
        )
    )


def _progress_if_due(run: _Run, state: TrainState) -> None:
    now = time.time()
    if now - state.last_progress_time >= run.options.progress_interval:
        _report_progress(run, state, now)
        state.last_progress_time = now


# End of a tick ------------------------------------------------------------------------------------


def _tick_stats(run: _Run, state: TrainState, tick_end_time: float) -> dict[str, Any]:
    device = run.device
    line: dict[str, Any] = {
        "tick": state.cur_tick,
        "kimg": state.cur_nimg / 1e3,
        "total_kimg": run.total_nimg / 1e3,
        "progress": min(state.cur_nimg / run.total_nimg, 1.0),
        "total_sec": tick_end_time - run.start_time,
        "sec_per_tick": tick_end_time - state.tick_start_time,
        "sec_per_kimg": (tick_end_time - state.tick_start_time)
        / max(state.cur_nimg - state.tick_start_nimg, 1)
        * 1e3,
        "maintenance_sec": state.maintenance_sec,
        "cpu_mem_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "gpu_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0,
        "augment_p": run.augment.p,
        "batch": run.split.batch,
    }
    line.update(state.tick_stats.means())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    state.tick_stats.clear()
    return line


def _write_checkpoint(run: _Run, state: TrainState, rng_state: dict[str, Any]) -> Path:
    setup = run.setup
    counters = state.counters()
    counters["cur_tick"] += 1  # a resumed run starts with the next tick
    return ckpt_io.write_checkpoint(
        run.outdir,
        networks={"G": setup.G, "D": setup.D, "G_ema": setup.G_ema},
        optimizers={"opt_G": run.opt_G, "opt_D": run.opt_D},
        pl_mean=run.loss.pl_mean,
        configs={
            "options": run.options.to_dict(),
            "preset": setup.preset.to_dict(),
            "G_config": setup.G_config.to_dict(),
            "D_config": setup.D_config.to_dict(),
        },
        counters=counters,
        augment=run.augment.state(),
        rng=rng_state,
        metrics=state.metrics,
    )


def _end_tick(run: _Run, state: TrainState) -> None:
    """Stats, a progress line, and every `--snap` ticks (and at the end) metrics, previews and a
    checkpoint. Maintenance must not disturb training randomness, so a run that snapshots at other
    ticks (or was resumed) draws the same numbers: the RNG state is captured here and restored after."""
    options, callback, env = run.options, run.callback, run.env
    rng_state = ckpt_io.capture_rng_state({"latents": run.latents})
    tick_end_time = time.time()
    stats_line = _tick_stats(run, state, tick_end_time)

    snapshot = state.done or state.cur_tick % options.snap == 0
    if snapshot and not state.done and tick_end_time - state.last_progress_time >= options.progress_interval:
        # The tick's line waits for the snapshot (its metrics go into it); on a CPU that is seconds,
        # and at tick 0 it would hold back the run's first report of its speed, so report now.
        _report_progress(run, state, tick_end_time)
    # Metrics on rank 0 only (the others wait at the next all-reduce); not on a stop, which must be quick.
    if snapshot and run.detector is not None and not state.stopped:
        state.metrics = _evaluate_metrics(options, run.setup.G_ema, run.detector, run.device)
        stats_line.update({f"Metrics/{k}": v for k, v in state.metrics.items()})
    if snapshot and env.is_main:
        preview = run.outdir / f"fakes{state.cur_nimg // 1000:06d}.png"
        callback.on_preview(run.previews.render(run.setup.G_ema, preview, run.split.batch_gpu, run.device))
        state.last_ckpt = _write_checkpoint(run, state, rng_state)
        ckpt_io.prune_checkpoints(run.outdir, options.keep, best_metric(options.metrics))
        callback.on_checkpoint(state.last_ckpt, state.cur_nimg / 1e3, dict(state.metrics))
    if run.stats_log is not None:
        run.stats_log.write(stats_line)
        callback.on_tick(dict(stats_line))
    state.last_stats = stats_line
    ckpt_io.restore_rng_state(rng_state, {"latents": run.latents})

    state.cur_tick += 1
    state.tick_start_nimg, state.tick_start_time = state.cur_nimg, time.time()
    state.last_progress_time = state.tick_start_time
    state.maintenance_sec = state.tick_start_time - tick_end_time


def _finish(run: _Run, state: TrainState) -> TrainResult:
    model_path: Path | None = None
    if run.env.is_main:
        if run.stats_log is not None:
            run.stats_log.close()
        if run.options.export and not state.stopped:
            model_path = ckpt_io.export_generator(run.setup.G_ema, run.outdir / "network-final.safetensors")
    return TrainResult(
        outdir=run.outdir,
        kimg=state.cur_nimg / 1e3,
        ticks=state.cur_tick,
        stopped=state.stopped,
        checkpoint=state.last_ckpt or ckpt_io.latest_checkpoint(run.outdir),
        model=model_path,
        stats=state.last_stats,
        metrics=state.metrics,
        world_size=run.env.world_size,
    )


# Training -----------------------------------------------------------------------------------------


def train(
    options: TrainOptions,
    callback: TrainingCallback | None = None,
    env: DistEnv | None = None,
    init_method: str | None = None,
) -> TrainResult:
    """Train (or fine-tune, or resume) in this process; with `env`, as one rank of a process group."""
    env = env or DistEnv()
    callback = callback if (callback is not None and env.is_main) else NullCallback()
    device = _pick_device(options, env)
    # The detector is loaded before anything is built or written, so that a missing file or a failed
    # download stops the run here with one line rather than after the first tick.
    detector = load_metrics_detector(options, device) if env.is_main else None
    init_process_group(env, device, init_method)
    try:
        return _train(options, callback, env, device, detector)
    finally:
        if env.enabled:
            shutdown()


def _train(
    options: TrainOptions,
    callback: TrainingCallback,
    env: DistEnv,
    device: torch.device,
    detector: FeatureDetector | None,
) -> TrainResult:
    run, state = _setup(options, callback, env, device, detector)
    while not state.done:
        _training_step(run, state)
        _check_stop(run, state)
        if _tick_continues(run, state):
            _progress_if_due(run, state)
            continue
        _end_tick(run, state)
    return _finish(run, state)
