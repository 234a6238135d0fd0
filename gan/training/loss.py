"""The StyleGAN2 / StyleGAN3 training objective.

Non-saturating logistic loss (Goodfellow et al. 2014, as in StyleGAN2 Sec. 2), R1 on reals (Mescheder et
al. 2018), path-length regularisation and style-mixing regularisation (StyleGAN2 Sec. 3.2 and StyleGAN
Sec. 3.1), the lazy-regularisation schedule (StyleGAN2 Sec. 3.1) and, for StyleGAN3-R, a Gaussian blur
of every image D sees that fades out early in training (StyleGAN3 Appendix B). Augmentation (ADA) is
applied to reals and fakes alike before D, so D never sees a leaked augmentation (ADA paper Sec. 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gan.config import LossConfig

Phase = Literal["Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth"]
PHASES: tuple[Phase, ...] = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")


# Non-saturating logistic loss: softplus(-l) = -log sigmoid(l), softplus(l) = -log(1 - sigmoid(l)).
def generator_logistic_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits)


def discriminator_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(fake_logits) + F.softplus(-real_logits)


# R1 (Mescheder et al. 2018, Eq. 9): gamma/2 * ||grad_x D(x)||^2 on reals.
def r1_penalty(real_logits: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """Squared gradient norm of D at the reals, per sample: [N]. `real_img` must require grad."""
    (grads,) = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img], create_graph=True)
    return grads.square().sum(dim=[1, 2, 3])


# Path length (StyleGAN2 Eq. 4): (||J_w^T y||_2 - a)^2 with y ~ N(0, I) / sqrt(H W) and a a running mean.
def path_lengths(img: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """||J_w^T y|| per sample, averaged over the ws: [N]. Dividing y by sqrt(H W) makes it resolution-free."""
    assert img.ndim == 4 and ws.ndim == 3  # [N, C, H, W], [N, num_ws, w_dim]
    noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
    (grads,) = torch.autograd.grad(outputs=[(img * noise).sum()], inputs=[ws], create_graph=True)
    return grads.square().sum(dim=2).mean(dim=1).sqrt()


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, taps exp2(-(x/sigma)^2) out to 3 sigma, zero padding (stylegan3 loss.py)."""
    radius = math.floor(sigma * 3)
    if radius <= 0:
        return img
    x = torch.arange(-radius, radius + 1, device=img.device, dtype=torch.float32)
    f = (x / sigma).square().neg().exp2()
    f = (f / f.sum()).to(img.dtype)
    channels = img.shape[1]
    fx = f.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    fy = f.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    img = F.conv2d(img, fx, padding=(0, radius), groups=channels)
    return F.conv2d(img, fy, padding=(radius, 0), groups=channels)


def blur_sigma_at(cur_nimg: int, init_sigma: float, fade_kimg: float) -> float:
    """The blur fades linearly from `init_sigma` to 0 over the first `fade_kimg` kimg."""
    if fade_kimg <= 0:
        return 0.0
    return max(1.0 - cur_nimg / (fade_kimg * 1e3), 0.0) * init_sigma


class StyleGANLoss:
    """Accumulates the gradients of one training phase for one micro-batch.

    `accumulate_gradients` returns detached per-phase statistics (sums and counts) for the tick log and
    the ADA heuristic, rather than reporting into a global collector.
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        config: LossConfig,
        augment_pipe: nn.Module | None = None,
        device: torch.device | str = "cpu",
        observe_real: Callable[[torch.Tensor], None] | None = None,
    ) -> None:
        """`observe_real` receives D's logits on the reals of every D phase: ADA's overfitting signal."""
        # Any: `mapping`/`synthesis` are submodules with keyword signatures nn.Module cannot express.
        self.G: Any = G
        self.D: Any = D
        self.config = config
        self.augment_pipe = augment_pipe
        self.observe_real = observe_real
        # Running mean `a` of the path lengths; part of the training state (saved in checkpoints).
        self.pl_mean = torch.zeros([], device=device)

    def run_G(
        self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        G = self.G
        ws = G.mapping(z, c, update_emas=update_emas)  # [N, num_ws, w_dim]
        if self.config.style_mixing_prob > 0:
            # Style mixing (StyleGAN Sec. 3.1): from a random layer on, take the ws of a second z.
            num_ws = ws.shape[1]
            cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, num_ws)
            mix = torch.rand([], device=ws.device) < self.config.style_mixing_prob
            cutoff = torch.where(mix, cutoff, torch.full_like(cutoff, num_ws))
            ws2 = G.mapping(torch.randn_like(z), c, update_emas=False)
            layer = torch.arange(num_ws, device=ws.device).view(1, -1, 1)
            ws = torch.where(layer < cutoff, ws, ws2)
        img = G.synthesis(ws, noise_mode="random", update_emas=update_emas)
        return img, ws

    def run_D(
        self, img: torch.Tensor, c: torch.Tensor, blur_sigma: float = 0.0, update_emas: bool = False
    ) -> torch.Tensor:
        if blur_sigma > 0:
            img = gaussian_blur(img, blur_sigma)
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        logits: torch.Tensor = self.D(img, c, update_emas=update_emas)
        return logits

    def accumulate_gradients(
        self,
        phase: Phase,
        real_img: torch.Tensor,
        real_c: torch.Tensor,
        gen_z: torch.Tensor,
        gen_c: torch.Tensor,
        gain: float,
        cur_nimg: int,
    ) -> dict[str, tuple[float, int]]:
        """Backpropagate `gain` x the phase's loss (mean over the micro-batch); return {name: (sum, count)}."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        cfg = self.config
        if cfg.pl_weight == 0:
            phase = {"Greg": "none", "Gboth": "Gmain"}.get(phase, phase)  # type: ignore[assignment]
        if cfg.r1_gamma == 0:
            phase = {"Dreg": "none", "Dboth": "Dmain"}.get(phase, phase)  # type: ignore[assignment]
        blur_sigma = blur_sigma_at(cur_nimg, cfg.blur_init_sigma, cfg.blur_fade_kimg)
        stats: dict[str, tuple[float, int]] = {}

        def report(name: str, values: torch.Tensor) -> None:
            values = values.detach().float().flatten()
            stats[name] = (float(values.sum()), values.numel())

        if phase in ("Gmain", "Gboth"):
            gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur_sigma)
            loss_G = generator_logistic_loss(gen_logits)
            report("Loss/G/loss", loss_G)
            report("Loss/scores/fake", gen_logits)
            loss_G.mean().mul(gain).backward()

        if phase in ("Greg", "Gboth"):
            n = max(gen_z.shape[0] // cfg.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:n], gen_c[:n])
            lengths = path_lengths(gen_img, gen_ws)
            pl_mean = self.pl_mean.lerp(lengths.mean().detach(), cfg.pl_decay)
            self.pl_mean.copy_(pl_mean)
            penalty = (lengths - pl_mean).square()
            report("Loss/pl_penalty", penalty)
            (penalty * cfg.pl_weight).mean().mul(gain).backward()

        if phase in ("Dmain", "Dboth"):
            # Fakes: D pushes their logits down; G's EMAs (w_avg, magnitude) update here, once per batch.
            with torch.no_grad():
                gen_img, _ = self.run_G(gen_z, gen_c, update_emas=True)
            gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur_sigma, update_emas=True)
            loss_Dgen = F.softplus(gen_logits)
            report("Loss/scores/fake", gen_logits)
            loss_Dgen.mean().mul(gain).backward()
        else:
            loss_Dgen = None

        if phase in ("Dmain", "Dreg", "Dboth"):
            do_r1 = phase in ("Dreg", "Dboth")
            real = real_img.detach().requires_grad_(do_r1)
            real_logits = self.run_D(real, real_c, blur_sigma=blur_sigma)
            report("Loss/scores/real", real_logits)
            report("Loss/signs/real", real_logits.sign())
            if self.observe_real is not None:
                self.observe_real(real_logits.detach())
            loss = real_logits.new_zeros(real_logits.shape)
            if phase in ("Dmain", "Dboth"):
                loss_Dreal = F.softplus(-real_logits)
                loss = loss + loss_Dreal
                assert loss_Dgen is not None
                report("Loss/D/loss", loss_Dgen.detach() + loss_Dreal.detach())
            if do_r1:
                penalty = r1_penalty(real_logits, real)
                report("Loss/r1_penalty", penalty)
                loss = loss + penalty.view(-1, 1) * (cfg.r1_gamma / 2)
            loss.mean().mul(gain).backward()
        return stats


def lazy_regularization_hyperparameters(
    lr: float, betas: tuple[float, float], reg_interval: int | None
) -> tuple[float, tuple[float, float]]:
    """StyleGAN2 Sec. 3.1 / Appendix B: with a regulariser every k minibatches, the optimizer takes k+1
    steps per k minibatches, so lr and betas are rescaled by c = k / (k + 1) to keep the same dynamics."""
    if reg_interval is None:
        return lr, betas
    ratio = reg_interval / (reg_interval + 1)
    return lr * ratio, (betas[0] ** ratio, betas[1] ** ratio)
