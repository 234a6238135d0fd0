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

import copy
import dataclasses
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from gan.config import DiscriminatorConfig, GeneratorConfig
from gan.errors import ConfigError, GanError
from gan.training import checkpoint as ckpt_io
from gan.training.distributed import (
    DistEnv,
    all_reduce_sum,
    average_gradients_,
    broadcast_module_,
    env_from_torchrun,
    init_process_group,
    shutdown,
    spawn,
)
from gan.training.ema import ema_beta, update_ema
from gan.training.loss import LossConfig, Phase, StyleGANLoss, lazy_regularization_hyperparameters
from gan.training.presets import PRESET_NAMES, TrainingPreset, make_preset
from gan.training.progress import (
    NullCallback,
    StatAccumulator,
    StatsLog,
    TrainingCallback,
    grid_shape,
    progress_line,
    save_image_grid,
)

if TYPE_CHECKING:
    from gan.metrics.detector import FeatureDetector

AugMode = Literal["ada", "fixed", "noaug"]


@dataclass(frozen=True)
class TrainOptions:
    """Everything `stylegan train` accepts. None means "the preset's value"."""

    data: Path
    outdir: Path
    cfg: str = "auto"
    resume: Path | None = None
    kimg: float | None = None
    batch: int | None = None
    batch_gpu: int | None = None
    gamma: float | None = None
    aug: AugMode = "ada"
    p: float | None = None
    target: float = 0.6
    augpipe: str = "bgc"
    mirror: bool = False
    cond: bool = False
    freezed: int = 0
    snap: int = 50
    tick: float = 4.0
    keep: int = 3  # checkpoints kept besides the best by the first FID or KID metric
    metrics: tuple[str, ...] = ()
    detector: str | None = None  # Inception file (path or URL) for the metrics; None: the official URL
    metrics_num_gen: int | None = None  # generated images per metric; None: the count in its name
    seed: int = 0
    deterministic: bool = False
    device: Literal["cpu", "cuda"] | None = None  # None: cuda when available
    gpus: int = 1
    workers: int | None = None  # DataLoader processes; None: 0 on CPU, 3 on CUDA
    fp32: bool = False  # disable mixed precision
    preview_images: int = 64  # upper bound on the preview grid (official grids hold up to 1024)
    # Seconds between progress lines inside a tick (0: after every iteration). A CPU tick can take many
    # minutes; the callback's user wants images seen, speed and an ETA long before it ends.
    progress_interval: float = 5.0
    # Small-network overrides (tests, demo model); None keeps the preset's value.
    cbase: int | None = None
    cmax: int | None = None
    map_layers: int | None = None
    z_dim: int | None = None
    w_dim: int | None = None
    mbstd_group: int | None = None
    glr: float | None = None
    dlr: float | None = None
    use_noise: bool | None = None  # StyleGAN2 noise inputs; tests that compare batch splits turn them off
    export: bool = True  # write G_ema as a model file at the end

    def __post_init__(self) -> None:
        if self.cfg not in PRESET_NAMES:
            raise ConfigError(f"unknown --cfg {self.cfg!r}; choose one of {', '.join(PRESET_NAMES)}")
        if self.aug not in ("ada", "fixed", "noaug"):
            raise ConfigError(f"--aug must be ada, fixed or noaug, got {self.aug!r}")
        if self.aug == "fixed" and self.p is None:
            raise ConfigError("--aug fixed requires --p")
        if self.p is not None and not 0 <= self.p <= 1:
            raise ConfigError(f"--p must be in [0, 1], got {self.p}")
        if not 0 <= self.target <= 1:
            raise ConfigError(f"--target must be in [0, 1], got {self.target}")
        if self.kimg is not None and self.kimg <= 0:
            raise ConfigError(f"--kimg must be > 0, got {self.kimg}")
        if self.tick <= 0:
            raise ConfigError(f"--tick must be > 0, got {self.tick}")
        if not 0 <= self.progress_interval < float("inf"):
            raise ConfigError(f"progress_interval must be >= 0 seconds, got {self.progress_interval}")
        if self.snap < 1:
            raise ConfigError(f"--snap must be >= 1, got {self.snap}")
        if self.gpus < 1:
            raise ConfigError(f"--gpus must be >= 1, got {self.gpus}")
        if self.batch is not None and self.batch % self.gpus:
            raise ConfigError(f"--batch {self.batch} must be a multiple of --gpus {self.gpus}")
        if self.freezed < 0:
            raise ConfigError(f"--freezed must be >= 0, got {self.freezed}")
        if self.gamma is not None and self.gamma < 0:
            raise ConfigError(f"--gamma must be >= 0, got {self.gamma}")
        if self.device not in (None, "cpu", "cuda"):
            raise ConfigError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.keep < 1:  # the newest checkpoint is what a resumed or replaced run continues from
            raise ConfigError(f"--keep must be >= 1, got {self.keep}")
        from gan.metrics.compute import parse_metric

        for name in self.metrics:
            parse_metric(name)  # an unknown name fails here, not at the first snapshot
        if self.metrics_num_gen is not None and self.metrics_num_gen < 2:
            raise ConfigError(f"--metrics-num-gen must be >= 2, got {self.metrics_num_gen}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("data", "outdir", "resume"):
            d[k] = None if d[k] is None else str(d[k])
        d["metrics"] = list(self.metrics)
        return d


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


# Networks -----------------------------------------------------------------------------------------


def build_networks(G_config: GeneratorConfig, D_config: DiscriminatorConfig) -> tuple[nn.Module, nn.Module]:
    from gan.generator import build_generator
    from gan.stylegan2.discriminator import Discriminator

    return build_generator(G_config), Discriminator(D_config)


def size_preset_to_generator(
    preset: TrainingPreset, G_config: GeneratorConfig, options: TrainOptions
) -> TrainingPreset:
    """The preset with its channel base and max taken from the generator being fine-tuned, for a D built
    from scratch beside it (generator-only files: ours, the demo, pickles without D).

    The preset's own D is sized for a full-width G: at 64 px `auto` gives D 23M parameters, which beside
    the 0.4M-parameter demo generator made a CPU fine-tune take 16 minutes for 0.29 kimg and its
    checkpoints 288 MB. A D at G's channel base and max has a parameter count of the same order, as in
    every official config, where G and D share `--cbase` and `--cmax`. `--cbase`/`--cmax` given
    explicitly still win. Config R doubles G's feature maps over `--cbase`/`--cmax` (stylegan3
    train.py) while D keeps them, so they are halved back for it.
    """
    synthesis = G_config.synthesis
    widen = 2 if G_config.architecture == "stylegan3-r" else 1
    return preset.replace(
        channel_base=options.cbase if options.cbase is not None else synthesis.channel_base // widen,
        channel_max=options.cmax if options.cmax is not None else synthesis.channel_max // widen,
    )


def frozen_discriminator_layers(config: DiscriminatorConfig, freezed: int) -> list[str]:
    """Freeze-D (Mo et al. 2020) as the official `--freezed N`: the first N *layers* of D, counted from the
    top resolution block in the official order fromrgb, conv0, conv1, skip (networks.py DiscriminatorBlock)."""
    layers: list[str] = []
    res = config.img_resolution
    while res >= 8:
        if res == config.img_resolution or config.architecture == "skip":
            layers.append(f"b{res}.fromrgb")
        layers += [f"b{res}.conv0", f"b{res}.conv1"]
        if config.architecture == "resnet":
            layers.append(f"b{res}.skip")
        res //= 2
    if freezed > len(layers):
        raise ConfigError(
            f"--freezed {freezed}: D has only {len(layers)} layers above 4x4 that can be frozen"
        )
    return layers[:freezed]


def _module_config(module: nn.Module, kind: str) -> Any:
    config = getattr(module, "config", None)
    if config is None:
        raise GanError(f"the resumed {kind} network does not expose its config")
    return config


@dataclass
class _Setup:
    preset: TrainingPreset
    G_config: GeneratorConfig
    D_config: DiscriminatorConfig
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    checkpoint: ckpt_io.TrainingCheckpoint | None  # ours, to continue exactly


def load_pickle_networks(path: Path) -> dict[str, nn.Module]:
    """G, D and G_ema, those present, from an official PyTorch or TensorFlow pickle (safe import), or G_ema
    alone from our generator file."""
    from gan.io.limits import DEFAULT_LIMITS
    from gan.io.official_pickle import networks_from_official
    from gan.io.safe_pickle import TFNetworkRecord, is_pickle, read_bytes_bounded, safe_loads
    from gan.io.tf_pickle import networks_from_tf

    data = read_bytes_bounded(path, DEFAULT_LIMITS)
    if len(data) >= 9 and data[8:9] == b"{":
        # Our generator file (what the service stores for every model): it holds G_ema alone, so G starts
        # from it and D from scratch, as the official resume of a pickle without D (require_all=False).
        from gan.io.checkpoint import load_generator

        return {"G_ema": load_generator(path)}
    if not is_pickle(data[:2]):
        raise GanError(f"--resume {path.name}: neither a network pickle nor a training checkpoint")
    obj = safe_loads(data, DEFAULT_LIMITS)
    if isinstance(obj, tuple) and obj and all(isinstance(o, TFNetworkRecord) for o in obj):
        return networks_from_tf(obj, ("G", "D", "G_ema"))
    if not isinstance(obj, dict):
        raise GanError(f"--resume {path.name}: not an official network pickle")
    present = [name for name in ("G", "D", "G_ema") if name in obj]
    if not present:
        raise GanError(f"--resume {path.name}: the pickle holds no G, D or G_ema")
    return networks_from_official(obj, present)


def _resolve_preset(options: TrainOptions, resolution: int, batch: int | None) -> TrainingPreset:
    preset = make_preset(options.cfg, resolution, gpus=options.gpus, batch=batch)
    overrides: dict[str, Any] = {}
    for opt_name, field_name in (
        ("cbase", "channel_base"),
        ("cmax", "channel_max"),
        ("map_layers", "map_layers"),
        ("z_dim", "z_dim"),
        ("w_dim", "w_dim"),
        ("mbstd_group", "mbstd_group"),
        ("glr", "glr"),
        ("dlr", "dlr"),
        ("gamma", "gamma"),
        ("kimg", "kimg"),
        ("use_noise", "use_noise"),
    ):
        value = getattr(options, opt_name)
        if value is not None:
            overrides[field_name] = value
    if options.fp32:
        overrides.update(num_fp16_res=0, conv_clamp=None)
    return preset.replace(**overrides)


def _check_compatible(
    G_config: GeneratorConfig, resolution: int, c_dim: int, img_channels: int, source: Path
) -> None:
    if G_config.img_resolution != resolution:
        raise ConfigError(
            f"cannot fine-tune {source.name}: it makes {G_config.img_resolution} px images, the data set is {resolution} px"
        )
    if G_config.c_dim != c_dim:
        raise ConfigError(
            f"cannot fine-tune {source.name}: it has {G_config.c_dim} classes, the training run has {c_dim}"
            + (" (pass --cond to train on the data set's labels)" if c_dim == 0 and G_config.c_dim else "")
        )
    if G_config.img_channels != img_channels:
        raise ConfigError(
            f"cannot fine-tune {source.name}: it makes {G_config.img_channels}-channel images, the data set has {img_channels}"
        )


def _setup_networks(options: TrainOptions, resolution: int, c_dim: int, channels: int) -> _Setup:
    resume = options.resume
    if resume is not None and ckpt_io.is_training_checkpoint(Path(resume)):
        ckpt = ckpt_io.load_checkpoint(Path(resume))
        preset = TrainingPreset.from_dict(ckpt.meta["preset"])
        if options.kimg is not None:
            preset = preset.replace(kimg=options.kimg)
        G_config = GeneratorConfig.from_dict(ckpt.meta["G_config"])
        D_config = DiscriminatorConfig.from_dict(ckpt.meta["D_config"])
        _check_compatible(G_config, resolution, c_dim, channels, Path(resume))
        G, D = build_networks(G_config, D_config)
        G_ema = copy.deepcopy(G)
        for name, module in (("G", G), ("D", D), ("G_ema", G_ema)):
            module.load_state_dict(ckpt.module_state(name))
        return _Setup(preset, G_config, D_config, G, D, G_ema, ckpt)

    preset = _resolve_preset(options, resolution, options.batch)
    if resume is None:
        G_config = preset.generator_config(resolution, c_dim, channels)
        D_config = preset.discriminator_config(resolution, c_dim, channels)
        G, D = build_networks(G_config, D_config)
        return _Setup(preset, G_config, D_config, G, D, copy.deepcopy(G), None)

    # Fine-tuning from an official (or TF) pickle: networks and their configs come from the file; the
    # preset supplies the optimisation hyper-parameters, with the official resume changes (train.py):
    # faster ADA, no EMA ramp-up, no blur fade-in.
    nets = load_pickle_networks(Path(resume))
    G_src = nets["G"] if "G" in nets else nets.get("G_ema")
    if G_src is None:
        raise GanError(f"{Path(resume).name} holds no generator to fine-tune")
    G_config = _module_config(G_src, "G")
    _check_compatible(G_config, resolution, c_dim, channels, Path(resume))
    if G_config.architecture != preset.architecture:
        if options.cfg not in ("auto", "stylegan3-t", "stylegan3-r") or G_config.architecture == "stylegan2":
            raise ConfigError(
                f"--cfg {options.cfg} trains {preset.architecture}, but {Path(resume).name} is {G_config.architecture}"
            )
        preset = _resolve_preset(
            dataclasses.replace(options, cfg=G_config.architecture), resolution, options.batch
        )
    preset = preset.replace(ada_kimg=100.0, ema_rampup=None, blur_init_sigma=0.0)
    D_src = nets.get("D")
    if D_src is not None:
        D_config = _module_config(D_src, "D")
    else:  # a file with only generators: D starts from scratch, as official with require_all=False
        preset = size_preset_to_generator(preset, G_config, options)
        D_config = preset.discriminator_config(resolution, c_dim, channels)
    G, D = build_networks(G_config, D_config)
    G.load_state_dict(G_src.state_dict())
    if D_src is not None:
        D.load_state_dict(D_src.state_dict())
    G_ema = copy.deepcopy(G)
    if nets.get("G_ema") is not None:
        G_ema.load_state_dict(nets["G_ema"].state_dict())
    return _Setup(preset, G_config, D_config, G, D, G_ema, None)


# Augmentation -------------------------------------------------------------------------------------


class _Augment:
    """The ADA pipeline and its controller, or nothing (`--aug noaug`, or fixed p = 0)."""

    def __init__(self, options: TrainOptions, preset: TrainingPreset, device: torch.device) -> None:
        self.pipe: nn.Module | None = None
        self.controller: Any = None
        if options.aug == "noaug" or (options.aug == "fixed" and not options.p):
            return
        from gan.training.augment import AdaController, AugmentPipe

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
                self.pipe.p.fill_(float(state["p"]))  # type: ignore[operator, union-attr]
        if self.controller is not None and state.get("controller") is not None:
            self.controller.load_state_dict(state["controller"])


# The loop -----------------------------------------------------------------------------------------


@dataclass
class _PhaseSpec:
    name: Phase
    module: nn.Module
    opt: torch.optim.Optimizer
    interval: int
    params: list[torch.nn.Parameter]


def _make_phases(
    setup: _Setup, frozen: list[str]
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
    import random

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
    from gan.training.dataset import ImageDataset

    start_time = time.time()
    _configure_determinism(options, device, env)
    outdir = Path(options.outdir)
    if env.is_main:
        outdir.mkdir(parents=True, exist_ok=True)

    # Training set.
    dataset = ImageDataset(options.data, use_labels=options.cond, xflip=options.mirror)
    if options.cond and not dataset.has_labels:
        raise ConfigError(f"--cond needs labels in {Path(options.data).name}'s dataset.json")
    c_dim = dataset.label_dim if options.cond else 0
    resolution, channels = dataset.resolution, dataset.num_channels

    # Networks and hyper-parameters.
    setup = _setup_networks(options, resolution, c_dim, channels)
    preset = setup.preset
    batch = preset.batch
    if batch % env.world_size:
        raise ConfigError(f"--batch {batch} must be a multiple of the number of GPUs ({env.world_size})")
    per_rank = batch // env.world_size
    batch_gpu = options.batch_gpu or per_rank
    if per_rank % batch_gpu:
        raise ConfigError(
            f"--batch {batch} must be a multiple of GPUs ({env.world_size}) x --batch-gpu ({batch_gpu})"
        )
    group = setup.D_config.mbstd_group_size  # None (TF pickles): the whole micro-batch is one group
    if group is not None and (batch_gpu < group or batch_gpu % group):
        raise ConfigError(
            f"--batch-gpu {batch_gpu} must be a multiple of D's minibatch-std group size {group}"
        )
    rounds = per_rank // batch_gpu
    # Per-rank streams for what each rank draws on its own (noise inputs, augmentation, mixing), as official.
    _seed_everything(options.seed * env.world_size + env.rank)
    G, D, G_ema = (m.to(device) for m in (setup.G, setup.D, setup.G_ema))
    G.train().requires_grad_(False)
    D.train().requires_grad_(False)
    G_ema.eval().requires_grad_(False)
    frozen = frozen_discriminator_layers(setup.D_config, options.freezed)
    phases, opt_G, opt_D = _make_phases(setup, frozen)
    augment = _Augment(options, preset, device)
    loss = StyleGANLoss(
        G,
        D,
        LossConfig(
            r1_gamma=preset.gamma,
            style_mixing_prob=preset.style_mixing_prob,
            pl_weight=preset.pl_weight,
            pl_batch_shrink=preset.pl_batch_shrink,
            pl_decay=preset.pl_decay,
            blur_init_sigma=preset.blur_init_sigma,
            blur_fade_kimg=preset.blur_fade_kimg,
        ),
        augment_pipe=augment.pipe,
        device=device,
        observe_real=augment.observe,
    )
    latents = torch.Generator().manual_seed(options.seed)  # z and generated labels, same on every rank

    # Counters, and the exact state of a resumed run.
    cur_nimg, cur_tick, batch_idx, data_pos = 0, 0, 0, 0
    ckpt = setup.checkpoint
    if ckpt is not None:
        counters = ckpt.meta["counters"]
        cur_nimg, cur_tick, batch_idx, data_pos = (
            counters["cur_nimg"],
            counters["cur_tick"],
            counters["batch_idx"],
            counters["data_pos"],
        )
        ckpt_io.load_optimizer(opt_G, "opt_G", ckpt)
        ckpt_io.load_optimizer(opt_D, "opt_D", ckpt)
        loss.pl_mean.copy_(ckpt.tensors["loss.pl_mean"])
        augment.load_state(ckpt.meta["augment"])
    for module in (G, D, G_ema):
        broadcast_module_(module, env)
    total_nimg = int(round(preset.kimg * 1000))
    tick_nimg = int(round(options.tick * 1000))

    # Previews: reals and fixed latents (seeds 0..n-1 as `gan.sampling.seed_to_z`), labels of the reals.
    grid = grid_shape(resolution, options.preview_images)
    grid_idx = np.random.RandomState(0).permutation(len(dataset))[: grid[0] * grid[1]] % len(dataset)
    grid_idx = np.resize(grid_idx, grid[0] * grid[1])
    grid_reals, grid_c = _load_batch(dataset, grid_idx)
    grid_z = torch.from_numpy(
        np.concatenate(
            [np.random.RandomState(s).randn(1, setup.G_config.z_dim) for s in range(len(grid_idx))]
        )
    ).float()

    def render_previews(path: Path) -> Path:
        with torch.no_grad():
            images = [
                G_ema(z.to(device), c.to(device), noise_mode="const").float().cpu()
                for z, c in zip(grid_z.split(batch_gpu), grid_c.split(batch_gpu), strict=True)
            ]
        return save_image_grid(torch.cat(images).numpy(), path, grid, drange=(-1, 1))

    stats_log: StatsLog | None = None
    if env.is_main:
        save_image_grid(grid_reals.numpy(), outdir / "reals.png", grid, drange=(0, 255))
        if ckpt is None:
            callback.on_preview(render_previews(outdir / "fakes_init.png"))
        stats_log = StatsLog(outdir / "stats.jsonl")

    stream = _BatchStream(options.seed, len(dataset), data_pos, batch, env)
    workers = options.workers if options.workers is not None else (3 if device.type == "cuda" else 0)
    loader: torch.utils.data.DataLoader[Any] = torch.utils.data.DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_sampler=stream,  # type: ignore[arg-type]
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),  # keeps the loader from drawing on the global RNG
    )
    data_iter = iter(loader)
    if ckpt is not None:
        ckpt_io.restore_rng_state(ckpt.meta["rng"], {"latents": latents})

    tick_stats = StatAccumulator()
    tick_start_nimg, tick_start_time = cur_nimg, time.time()
    last_progress_time = tick_start_time
    maintenance_sec = tick_start_time - start_time
    last_stats: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    last_ckpt: Path | None = None
    stopped = False
    done = cur_nimg >= total_nimg
    while not done:
        # One global batch: reals (this rank's slice) and latents for every phase.
        real_img, real_c = next(data_iter)
        real_img = (real_img.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
        real_c = real_c.to(device).split(batch_gpu)
        all_z = torch.randn([len(phases), batch, setup.G_config.z_dim], generator=latents)
        label_idx = torch.randint(len(dataset), [len(phases), batch], generator=latents)
        if c_dim:
            all_c = torch.from_numpy(np.stack([dataset.get_label(int(i)) for i in label_idx.flatten()]))
            all_c = all_c.view(len(phases), batch, c_dim)
        else:
            all_c = torch.zeros([len(phases), batch, 0])
        lo, hi = env.rank * per_rank, (env.rank + 1) * per_rank
        all_z, all_c = all_z[:, lo:hi].to(device), all_c[:, lo:hi].to(device)

        for k, phase in enumerate(phases):
            if batch_idx % phase.interval != 0:
                continue
            phase.opt.zero_grad(set_to_none=True)
            for p in phase.params:
                p.requires_grad_(True)
            for r in range(rounds):
                stats = loss.accumulate_gradients(
                    phase.name,
                    real_img[r],
                    real_c[r],
                    all_z[k].split(batch_gpu)[r],
                    all_c[k].split(batch_gpu)[r],
                    gain=phase.interval / rounds,
                    cur_nimg=cur_nimg,
                )
                tick_stats.add(stats)
            phase.module.requires_grad_(False)
            average_gradients_(phase.params, env)
            phase.opt.step()

        update_ema(G_ema, G, ema_beta(cur_nimg, batch, preset.ema_kimg, preset.ema_rampup))
        cur_nimg += batch
        data_pos += batch
        batch_idx += 1
        augment.step(batch, env, device)

        # Stop request? Asked every iteration (the callback keeps it cheap) so that a cancel takes effect
        # within one iteration, not at the next tick end, which can be many minutes away on a CPU.
        done = cur_nimg >= total_nimg
        stop = not done and callback.should_stop()
        if env.enabled:  # rank 0 decides; NCCL reduces device tensors only
            stop = all_reduce_sum(torch.tensor([float(stop)], device=device), env).item() > 0
        if stop:
            done = stopped = True

        # Tick boundary? Otherwise a progress line, if one is due.
        if not done and cur_tick != 0 and cur_nimg < tick_start_nimg + tick_nimg:
            now = time.time()
            if now - last_progress_time >= options.progress_interval:
                callback.on_progress(
                    progress_line(cur_nimg, total_nimg, cur_tick, tick_start_nimg, tick_start_time, now)
                )
                last_progress_time = now
            continue

        # Maintenance must not disturb training randomness, so a run that snapshots at other ticks
        # (or was resumed) draws the same numbers: the state is captured here and restored after.
        rng_state = ckpt_io.capture_rng_state({"latents": latents})
        tick_end_time = time.time()

        stats_line: dict[str, Any] = {
            "tick": cur_tick,
            "kimg": cur_nimg / 1e3,
            "total_kimg": total_nimg / 1e3,
            "progress": min(cur_nimg / total_nimg, 1.0),
            "total_sec": tick_end_time - start_time,
            "sec_per_tick": tick_end_time - tick_start_time,
            "sec_per_kimg": (tick_end_time - tick_start_time) / max(cur_nimg - tick_start_nimg, 1) * 1e3,
            "maintenance_sec": maintenance_sec,
            "cpu_mem_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "gpu_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0,
            "augment_p": augment.p,
            "batch": batch,
        }
        stats_line.update(tick_stats.means())
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        tick_stats.clear()

        snapshot = done or cur_tick % options.snap == 0
        if snapshot and not done and tick_end_time - last_progress_time >= options.progress_interval:
            # The tick's line waits for the snapshot (its metrics go into it); on a CPU that is seconds,
            # and at tick 0 it would hold back the run's first report of its speed, so report now.
            callback.on_progress(
                progress_line(cur_nimg, total_nimg, cur_tick, tick_start_nimg, tick_start_time, tick_end_time)
            )
        # Metrics on rank 0 only (the others wait at the next all-reduce); not on a stop, which must be quick.
        if snapshot and detector is not None and not stopped:
            metrics = _evaluate_metrics(options, G_ema, detector, device)
            stats_line.update({f"Metrics/{k}": v for k, v in metrics.items()})
        if snapshot and env.is_main:
            callback.on_preview(render_previews(outdir / f"fakes{cur_nimg // 1000:06d}.png"))
            last_ckpt = _write_checkpoint(
                outdir,
                setup,
                options,
                (G, D, G_ema),
                (opt_G, opt_D),
                loss,
                augment,
                counters={
                    "cur_nimg": cur_nimg,
                    "cur_tick": cur_tick + 1,
                    "batch_idx": batch_idx,
                    "data_pos": data_pos,
                },
                rng_state=rng_state,
                metrics=metrics,
            )
            ckpt_io.prune_checkpoints(outdir, options.keep, best_metric(options.metrics))
            callback.on_checkpoint(last_ckpt, cur_nimg / 1e3, dict(metrics))
        if stats_log is not None:
            stats_log.write(stats_line)
            callback.on_tick(dict(stats_line))
        last_stats = stats_line
        ckpt_io.restore_rng_state(rng_state, {"latents": latents})

        cur_tick += 1
        tick_start_nimg, tick_start_time = cur_nimg, time.time()
        last_progress_time = tick_start_time
        maintenance_sec = tick_start_time - tick_end_time

    model_path: Path | None = None
    if env.is_main:
        if stats_log is not None:
            stats_log.close()
        if options.export and not stopped:
            model_path = ckpt_io.export_generator(G_ema, outdir / "network-final.safetensors")
    return TrainResult(
        outdir=outdir,
        kimg=cur_nimg / 1e3,
        ticks=cur_tick,
        stopped=stopped,
        checkpoint=last_ckpt or ckpt_io.latest_checkpoint(outdir),
        model=model_path,
        stats=last_stats,
        metrics=metrics,
    )


def _write_checkpoint(
    outdir: Path,
    setup: _Setup,
    options: TrainOptions,
    nets: tuple[nn.Module, nn.Module, nn.Module],
    opts: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    loss: StyleGANLoss,
    augment: _Augment,
    counters: dict[str, int],
    rng_state: dict[str, Any],
    metrics: dict[str, float],
) -> Path:
    tensors: dict[str, torch.Tensor] = {}
    for name, module in zip(("G", "D", "G_ema"), nets, strict=True):
        tensors.update(ckpt_io.module_tensors(name, module))
    opt_meta = {}
    for name, opt in zip(("opt_G", "opt_D"), opts, strict=True):
        t, m = ckpt_io.optimizer_tensors(name, opt)
        tensors.update(t)
        opt_meta[name] = m
    tensors["loss.pl_mean"] = loss.pl_mean
    meta = {
        "options": options.to_dict(),
        "preset": setup.preset.to_dict(),
        "G_config": setup.G_config.to_dict(),
        "D_config": setup.D_config.to_dict(),
        "counters": counters,
        "kimg": counters["cur_nimg"] / 1e3,
        "augment": augment.state(),
        "optimizers": opt_meta,
        "rng": rng_state,
        "metrics": metrics,
    }
    return ckpt_io.save_checkpoint(outdir / ckpt_io.checkpoint_name(counters["cur_nimg"]), tensors, meta)


def load_metrics_detector(options: TrainOptions, device: torch.device) -> FeatureDetector | None:
    """The Inception detector `--metrics` needs (None without metrics); raises if it cannot be had."""
    if not options.metrics:
        return None
    from gan.metrics.detector import INCEPTION_URL, load_detector

    source = options.detector or INCEPTION_URL
    if "://" not in source and not Path(source).is_file():
        raise ConfigError(f"--detector {source}: no such file (the metrics in --metrics need it)")
    return load_detector(source, device=device)


def best_metric(metrics: tuple[str, ...] | list[str]) -> str | None:
    """The metric that picks the checkpoint kept as the best: the first FID or KID (lower is better);
    precision and recall have no single direction, so they never pick."""
    from gan.metrics.compute import parse_metric

    return next((m for m in metrics if parse_metric(m).kind in ("fid", "kid")), None)


def _evaluate_metrics(
    options: TrainOptions, G_ema: nn.Module, detector: FeatureDetector, device: torch.device
) -> dict[str, float]:
    from gan.metrics import compute_metrics

    results = compute_metrics(
        list(options.metrics),
        G=G_ema,
        data=Path(options.data),
        detector=detector,
        num_gen=options.metrics_num_gen,
        device=device,
    )
    return {k: float(v) for k, v in results.items()}


# Launching ----------------------------------------------------------------------------------------


def _spawned_rank(
    env: DistEnv, init_method: str | None, options: TrainOptions, callback: TrainingCallback | None
) -> None:
    train(options, callback if env.is_main else None, env, init_method)


def launch(options: TrainOptions, callback: TrainingCallback | None = None) -> TrainResult | None:
    """`--gpus N` spawns N ranks (the result is then read from `outdir`); under torchrun, this process is
    the rank torchrun says; otherwise one process."""
    env = env_from_torchrun()
    if env is not None:
        return train(options, callback, env, None)
    if options.gpus > 1:
        load_metrics_detector(options, torch.device("cpu"))  # fail here, not in a spawned rank
        spawn(_spawned_rank, options.gpus, (options, callback))
        return None
    return train(options, callback)
