"""`TrainOptions`: what `stylegan train` and the service's training job accept, checked in one place.

Every check that names a command-line flag lives here: those that need only the options run when the
options are built (`TrainOptions.check`), those that need the data set or the networks (how the batch
splits over ranks and micro-batches) are `split_batch`, which the loop calls once it knows them. Both
raise `ConfigError`, so the command line answers exit code 2 and the service 422.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gan.errors import ConfigError
from gan.metrics.compute import parse_metric
from gan.training.presets import TrainingPreset, make_preset
from gan.vocabulary import check_preset

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
        self.check()

    def check(self) -> None:
        """Refuse what no data set or network could make valid; the first fault, naming its flag."""
        check_preset(self.cfg)
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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainOptions:
        """The inverse of `to_dict` (how a rank started as a child process receives its options)."""
        values = dict(d)
        for k in ("data", "outdir", "resume"):
            values[k] = None if values.get(k) is None else Path(values[k])
        values["metrics"] = tuple(values.get("metrics", ()))
        return cls(**values)


# Option name -> the preset field it overrides when given.
_PRESET_OVERRIDES = (
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
)


def resolve_preset(options: TrainOptions, resolution: int, cfg: str | None = None) -> TrainingPreset:
    """The preset `cfg` (default `--cfg`) for this resolution, with the options' overrides applied."""
    preset = make_preset(cfg or options.cfg, resolution, gpus=options.gpus, batch=options.batch)
    overrides: dict[str, Any] = {}
    for opt_name, field_name in _PRESET_OVERRIDES:
        value = getattr(options, opt_name)
        if value is not None:
            overrides[field_name] = value
    if options.fp32:
        overrides.update(num_fp16_res=0, conv_clamp=None)
    return preset.replace(**overrides)


@dataclass(frozen=True)
class BatchSplit:
    """How one global batch is shared: `per_rank` images per rank, in `rounds` micro-batches of `batch_gpu`."""

    batch: int
    per_rank: int
    batch_gpu: int

    @property
    def rounds(self) -> int:
        return self.per_rank // self.batch_gpu


def split_batch(options: TrainOptions, batch: int, world_size: int, mbstd_group: int | None) -> BatchSplit:
    """The split of the preset's `batch` over `world_size` ranks and `--batch-gpu` micro-batches; each
    micro-batch must hold whole minibatch-std groups of D (`mbstd_group`; None: one group per micro-batch)."""
    if batch % world_size:
        raise ConfigError(f"--batch {batch} must be a multiple of the number of GPUs ({world_size})")
    per_rank = batch // world_size
    batch_gpu = options.batch_gpu or per_rank
    if per_rank % batch_gpu:
        raise ConfigError(
            f"--batch {batch} must be a multiple of GPUs ({world_size}) x --batch-gpu ({batch_gpu})"
        )
    if mbstd_group is not None and (batch_gpu < mbstd_group or batch_gpu % mbstd_group):
        raise ConfigError(
            f"--batch-gpu {batch_gpu} must be a multiple of D's minibatch-std group size {mbstd_group}"
        )
    return BatchSplit(batch, per_rank, batch_gpu)


def best_metric(metrics: tuple[str, ...] | list[str]) -> str | None:
    """The metric that picks the checkpoint kept as the best: the first FID or KID (lower is better);
    precision and recall have no single direction, so they never pick."""
    return next((m for m in metrics if parse_metric(m).kind in ("fid", "kid")), None)
