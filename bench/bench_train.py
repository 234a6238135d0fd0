"""Training speed, ours against NVIDIA's official code, in the same process on the same device.

    python bench/bench_train.py --device cuda --arch stylegan2 --res 256 --batch 32 --aug ada --fp16 \
        --official-repo ~/src/stylegan3 [--json out.json]

What is timed is the training iteration as both training loops run it (official `training_loop.py`):
the phases Gmain, Greg (every 4th iteration), Dmain, Dreg (every 16th) -- or Gboth for StyleGAN3 --
each zeroing gradients, accumulating the loss's gradients, sanitising them (NaN/inf, as both loops do)
and stepping Adam; then the G_ema update. One timed call is `--iters` iterations (16 by default, one
full lazy-regularisation period), and s/kimg is the time per iteration / batch x 1000.

Left out on both sides, so the comparison is of the networks, losses and augmentation: data loading
(the same random "reals" tensor is fed to both), ticks, snapshots and metrics, and the ADA controller
(p is held at `--aug-p`; the controller costs one sign-sum per D phase). The official sec/kimg printed
in training logs includes data loading, so our figures sit a little below a log's for the same run.

Both sides build their networks from one configuration (our `gan.training.presets`, the official
`train.py` hyper-parameters) and ours receive the official random weights, checked by comparing G's
images and D's logits before anything is timed.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import environment, fmt_bytes, fmt_ratio, paired_timing, parse_device, peak_memory
from official import (
    OfficialCode,
    build_official_discriminator,
    build_official_generator,
    copy_weights,
    enable_training_gradfix,
    load_official,
)
from torch import nn

from gan.config import DiscriminatorConfig, GeneratorConfig
from gan.training.augment import AUGMENT_PRESETS, AugmentPipe
from gan.training.distributed import DistEnv, average_gradients_
from gan.training.ema import ema_beta, update_ema
from gan.training.loss import StyleGANLoss, lazy_regularization_hyperparameters
from gan.training.networks import build_networks
from gan.training.presets import TrainingPreset, make_preset

# fp32 on both sides: summation order only (measured ~1e-6 on CPU for G images and D logits).
TOLERANCE = {False: 1e-3, True: 5e-2}

Accumulate = Callable[[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float, int], None]


@dataclass
class _Phase:
    name: str
    module: nn.Module
    opt: torch.optim.Optimizer
    interval: int


def _phases(preset: TrainingPreset, G: nn.Module, D: nn.Module) -> list[_Phase]:
    """The official phase list with lazy regularisation (StyleGAN2 Sec. 3.1), the same for both sides."""
    phases = []
    for name, module, lr, interval in (
        ("G", G, preset.glr, preset.g_reg_interval),
        ("D", D, preset.dlr, preset.d_reg_interval),
    ):
        lr_c, betas_c = lazy_regularization_hyperparameters(lr, preset.betas, interval)
        opt = torch.optim.Adam(module.parameters(), lr=lr_c, betas=betas_c, eps=preset.eps)
        if interval is None:
            phases.append(_Phase(f"{name}both", module, opt, 1))
        else:
            phases += [_Phase(f"{name}main", module, opt, 1), _Phase(f"{name}reg", module, opt, interval)]
    return phases


class _Trainer:
    """One side's networks, optimizers and loss, and its way of finishing a phase and updating G_ema."""

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        preset: TrainingPreset,
        accumulate: Accumulate,
        finish_phase: Callable[[nn.Module], None],
        update_G_ema: Callable[[nn.Module, nn.Module, float], None],
        reals: torch.Tensor,
    ) -> None:
        self.G, self.D, self.G_ema = G, D, copy.deepcopy(G).eval()
        self.preset = preset
        self.phases = _phases(preset, G, D)
        self.accumulate = accumulate
        self.finish_phase = finish_phase
        self.update_G_ema = update_G_ema
        self.reals = reals  # [N, C, H, W] in [-1, 1]
        self.batch_idx = 0
        self.cur_nimg = 0
        self.latents = torch.Generator(device=reals.device).manual_seed(1)

    def iteration(self) -> None:
        batch, device = self.reals.shape[0], self.reals.device
        real_c = torch.zeros([batch, 0], device=device)
        all_z = torch.randn([len(self.phases), batch, self.G.z_dim], device=device, generator=self.latents)
        for phase, z in zip(self.phases, all_z, strict=True):
            if self.batch_idx % phase.interval != 0:
                continue
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            self.accumulate(phase.name, self.reals, real_c, z, real_c, phase.interval, self.cur_nimg)
            phase.module.requires_grad_(False)
            self.finish_phase(phase.module)
            phase.opt.step()
        beta = ema_beta(self.cur_nimg, batch, self.preset.ema_kimg, self.preset.ema_rampup)
        self.update_G_ema(self.G_ema, self.G, beta)
        self.cur_nimg += batch
        self.batch_idx += 1


def _ours(
    G_config: GeneratorConfig,
    D_config: DiscriminatorConfig,
    preset: TrainingPreset,
    aug: str,
    p: float,
    reals: torch.Tensor,
) -> _Trainer:
    device = reals.device
    G, D = build_networks(G_config, D_config)
    G, D = G.train().requires_grad_(False).to(device), D.train().requires_grad_(False).to(device)
    pipe = (
        None if aug == "noaug" else AugmentPipe.from_preset(aug, p=p).train().requires_grad_(False).to(device)
    )
    loss = StyleGANLoss(G, D, preset.loss_config(), augment_pipe=pipe, device=device)

    def accumulate(phase: str, real: torch.Tensor, real_c: torch.Tensor, z: torch.Tensor, c: torch.Tensor, gain: float, nimg: int) -> None:  # fmt: skip
        loss.accumulate_gradients(phase, real, real_c, z, c, gain=gain, cur_nimg=nimg)  # type: ignore[arg-type]

    def finish_phase(module: nn.Module) -> None:
        average_gradients_(list(module.parameters()), DistEnv())  # one process: only the NaN/inf clamp

    return _Trainer(G, D, preset, accumulate, finish_phase, update_ema, reals)


def _official_ema(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """The official loop's G_ema update: lerp parameters, copy buffers, paired by position."""
    with torch.no_grad():
        for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
            b_ema.copy_(b)


def _official_finish_phase(module: nn.Module) -> None:
    """The official loop: gradients flattened, NaN/inf clamped, split back (stylegan3 training_loop.py)."""
    params = [p for p in module.parameters() if p.grad is not None]
    if params:
        flat = torch.cat([p.grad.flatten() for p in params])  # type: ignore[union-attr]
        torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
        for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
            p.grad = g.reshape(p.shape)


def _official(
    code: OfficialCode,
    G_config: GeneratorConfig,
    D_config: DiscriminatorConfig,
    preset: TrainingPreset,
    aug: str,
    p: float,
    reals: torch.Tensor,
) -> _Trainer:
    device = reals.device
    sg2 = G_config.architecture == "stylegan2"
    # stylegan3 train.py, --cfg stylegan2: regular (not grouped) convolutions while training.
    extra = {"fused_modconv_default": "inference_only"} if sg2 and code.layout == "stylegan3" else {}
    G = build_official_generator(code, G_config, **extra)
    D = build_official_discriminator(code, D_config)
    G, D = G.train().requires_grad_(False).to(device), D.train().requires_grad_(False).to(device)
    pipe = None
    if aug != "noaug":
        pipe = code.augment.AugmentPipe(**AUGMENT_PRESETS[aug]).train().requires_grad_(False).to(device)
        pipe.p.copy_(torch.as_tensor(p))
    lc = preset.loss_config()  # the weights our loss gets, passed to the official one by name
    if code.layout == "stylegan3":
        loss = code.loss.StyleGAN2Loss(
            device=device,
            G=G,
            D=D,
            augment_pipe=pipe,
            r1_gamma=lc.r1_gamma,
            style_mixing_prob=lc.style_mixing_prob,
            pl_weight=lc.pl_weight,
            pl_batch_shrink=lc.pl_batch_shrink,
            pl_decay=lc.pl_decay,
            pl_no_weight_grad=sg2,  # train.py, --cfg stylegan2
            blur_init_sigma=lc.blur_init_sigma,
            blur_fade_kimg=lc.blur_fade_kimg,
        )

        def accumulate(phase: str, real: torch.Tensor, real_c: torch.Tensor, z: torch.Tensor, c: torch.Tensor, gain: float, nimg: int) -> None:  # fmt: skip
            loss.accumulate_gradients(phase=phase, real_img=real, real_c=real_c, gen_z=z, gen_c=c, gain=gain, cur_nimg=nimg)  # fmt: skip

    else:
        loss = code.loss.StyleGAN2Loss(
            device=device,
            G_mapping=G.mapping,
            G_synthesis=G.synthesis,
            D=D,
            augment_pipe=pipe,
            style_mixing_prob=lc.style_mixing_prob,
            r1_gamma=lc.r1_gamma,
            pl_batch_shrink=lc.pl_batch_shrink,
            pl_decay=lc.pl_decay,
            pl_weight=lc.pl_weight,
        )

        def accumulate(phase: str, real: torch.Tensor, real_c: torch.Tensor, z: torch.Tensor, c: torch.Tensor, gain: float, nimg: int) -> None:  # fmt: skip
            loss.accumulate_gradients(phase=phase, real_img=real, real_c=real_c, gen_z=z, gen_c=c, sync=True, gain=gain)  # fmt: skip

    return _Trainer(G, D, preset, accumulate, _official_finish_phase, _official_ema, reals)


def _parity(ours: _Trainer, official: _Trainer, reals: torch.Tensor, fp16: bool) -> dict[str, float]:
    """Max abs difference of G's images (const noise) and D's logits on the reals, before training."""
    batch, device = reals.shape[0], reals.device
    z = torch.randn([batch, ours.G.z_dim], generator=torch.Generator().manual_seed(0)).to(device)
    c = torch.zeros([batch, 0], device=device)
    with torch.no_grad():
        img_diff = (ours.G(z, c, noise_mode="const") - official.G(z, c, noise_mode="const")).abs().max()
        logit_diff = (ours.D(reals, c) - official.D(reals, c)).abs().max()
    diffs = {"G_max_abs_diff": float(img_diff), "D_max_abs_diff": float(logit_diff)}
    if not max(diffs.values()) <= TOLERANCE[fp16]:
        raise SystemExit(f"ours and official differ before training: {diffs}; refusing to time them")
    return diffs


def bench(code: OfficialCode, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    preset = make_preset(args.cfg, args.res, batch=args.batch)
    changes: dict[str, Any] = {} if args.fp16 else {"num_fp16_res": 0, "conv_clamp": None}  # official --fp32
    for name, field in (("cbase", "channel_base"), ("cmax", "channel_max"), ("map", "map_layers"), ("gamma", "gamma")):  # fmt: skip
        if getattr(args, name) is not None:
            changes[field] = getattr(args, name)
    preset = preset.replace(**changes)
    G_config = preset.generator_config(args.res, 0, 3)
    D_config = preset.discriminator_config(args.res, 0, 3)
    if args.batch % D_config.mbstd_group_size:
        raise SystemExit(
            f"--batch {args.batch} must be a multiple of the mbstd group ({D_config.mbstd_group_size})"
        )

    reals = torch.rand([args.batch, 3, args.res, args.res], generator=torch.Generator().manual_seed(2))
    reals = (reals * 2 - 1).to(device)
    torch.manual_seed(args.seed)
    official = _official(code, G_config, D_config, preset, args.aug, args.aug_p, reals)
    ours = _ours(G_config, D_config, preset, args.aug, args.aug_p, reals)
    copy_weights(official.G, ours.G)
    copy_weights(official.D, ours.D)
    copy_weights(official.G_ema, ours.G_ema)
    diffs = _parity(ours, official, reals, args.fp16)

    def run(side: _Trainer) -> Callable[[], None]:
        def call() -> None:
            for _ in range(args.iters):
                side.iteration()

        return call

    timing = paired_timing(run(ours), run(official), device, args.warmup, args.rounds, 1)
    # Memory over one iteration where every phase runs (batch_idx a multiple of every interval).
    for side in (ours, official):
        side.batch_idx = 0
    mem_ours = peak_memory(ours.iteration, device)
    for side in (ours, official):
        side.batch_idx = 0
    mem_official = peak_memory(official.iteration, device)
    t = timing.to_dict()
    to_kimg = 1e3 / (args.iters * args.batch)
    return {
        "arch": G_config.architecture,
        "cfg": args.cfg,
        "res": args.res,
        "batch": args.batch,
        "fp16": args.fp16,
        "aug": args.aug,
        "aug_p": args.aug_p if args.aug != "noaug" else None,
        "iters_per_call": args.iters,
        "warmup_calls": args.warmup,
        "rounds": args.rounds,
        "preset": preset.to_dict(),
        "G_config": G_config.to_dict(),
        "D_config": D_config.to_dict(),
        **diffs,
        **t,
        "ours_s_per_kimg": t["ours_median_s"] * to_kimg,
        "official_s_per_kimg": t["official_median_s"] * to_kimg,
        "ours_peak_memory": mem_ours,
        "official_peak_memory": mem_official,
    }


def markdown_row(r: dict[str, Any]) -> str:
    aug = "noaug" if r["aug"] == "noaug" else f"{r['aug']} p={r['aug_p']}"
    return (
        f"| {r['arch']} | {r['res']} | {r['batch']} | {'fp16' if r['fp16'] else 'fp32'} | {aug} "
        f"| {r['ours_s_per_kimg']:.0f} s/kimg | {r['official_s_per_kimg']:.0f} s/kimg "
        f"| {fmt_ratio(r)} "
        f"| {fmt_bytes(r['ours_peak_memory']['bytes'])} / {fmt_bytes(r['official_peak_memory']['bytes'])} "
        f"| {max(r['G_max_abs_diff'], r['D_max_abs_diff']):.1e} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--official-repo",
        type=Path,
        required=True,
        help="checkout of NVlabs/stylegan3 or stylegan2-ada-pytorch",
    )
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument("--arch", choices=("stylegan2", "stylegan3-t", "stylegan3-r"), default="stylegan2")
    p.add_argument("--cfg", help="training preset (default: stylegan2, or the StyleGAN3 config of --arch)")
    p.add_argument("--res", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument(
        "--fp16",
        action="store_true",
        help="mixed precision as official (CUDA only); default: official --fp32",
    )
    p.add_argument("--aug", default="bgc", help="augment pipe preset (bgc, the ADA default) or noaug")
    p.add_argument("--aug-p", type=float, default=0.2, help="augmentation probability, held fixed")
    p.add_argument("--cbase", type=int)
    p.add_argument("--cmax", type=int)
    p.add_argument("--map", type=int)
    p.add_argument("--gamma", type=float)
    p.add_argument("--official-impl", choices=("cuda", "ref"), default="cuda")
    p.add_argument("--iters", type=int, default=16, help="iterations per timed call")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per side")
    p.add_argument("--rounds", type=int, default=3, help="paired rounds; figures are their median")
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    device = parse_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fp16 and device.type != "cuda":
        p.error("--fp16 needs --device cuda (stylegan2-ada-pytorch would run fp16 convolutions on the CPU)")
    if args.aug != "noaug" and args.aug not in AUGMENT_PRESETS:
        p.error(f"--aug must be noaug or one of {', '.join(AUGMENT_PRESETS)}")
    if not 0 <= args.aug_p <= 1:
        p.error("--aug-p must be in [0, 1]")
    args.cfg = args.cfg or ("stylegan2" if args.arch == "stylegan2" else args.arch)
    # As the official training loop: cuDNN autotuning, TF32 off, its gradfix ops on CUDA.
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    code = load_official(args.official_repo, impl=args.official_impl, device=device)
    if device.type == "cuda":
        enable_training_gradfix(code)
    if args.arch != "stylegan2" and code.networks_sg3 is None:
        p.error(f"--arch {args.arch} needs NVlabs/stylegan3; {code.repo} is stylegan2-ada-pytorch")
    env = environment(device)
    print(json.dumps({"environment": env, "official": code.describe()}, indent=1), file=sys.stderr)
    result = bench(code, device, args)
    print(markdown_row(result), flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"environment": env, "official": code.describe(), "results": [result]}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
