"""The training objective, the EMA and the presets, on tiny networks (seconds on CPU)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gan.config import (
    GeneratorConfig,
    LossConfig,
    MappingConfig,
    StyleGAN2SynthesisConfig,
    StyleGAN3SynthesisConfig,
)
from gan.errors import ConfigError
from gan.generator import build_generator
from gan.training.ema import ema_beta, update_ema
from gan.training.loss import (
    StyleGANLoss,
    blur_sigma_at,
    discriminator_logistic_loss,
    gaussian_blur,
    generator_logistic_loss,
    lazy_regularization_hyperparameters,
    path_lengths,
    r1_penalty,
)
from gan.training.presets import make_preset
from gan.vocabulary import PRESET_NAMES


def tiny_generator(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = GeneratorConfig(
        z_dim=8,
        w_dim=8,
        img_resolution=16,
        mapping=MappingConfig(num_layers=2),
        synthesis=StyleGAN2SynthesisConfig(channel_base=64, channel_max=8),
    )
    return build_generator(config)


class LinearD(nn.Module):
    """D(x) = <a, x>: its input gradient is `a` everywhere, so R1 is known in closed form."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(shape))

    def forward(self, img: torch.Tensor, c: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
        return (img * self.a).sum(dim=[1, 2, 3]).unsqueeze(1)


def test_logistic_losses_are_the_non_saturating_gan_losses() -> None:
    logits = torch.linspace(-8, 8, 17)
    p = torch.sigmoid(logits)
    assert torch.allclose(generator_logistic_loss(logits), -torch.log(p), atol=1e-5)
    real, fake = logits, logits.flip(0)
    expected = -torch.log(torch.sigmoid(real)) - torch.log(1 - torch.sigmoid(fake))
    assert torch.allclose(discriminator_logistic_loss(real, fake), expected, atol=1e-4)


def test_r1_penalty_of_a_linear_discriminator_is_the_squared_weight_norm() -> None:
    D = LinearD((3, 8, 8))
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    penalty = r1_penalty(D(x, torch.zeros(4, 0)), x)
    assert torch.allclose(penalty, D.a.square().sum().expand(4), rtol=1e-5)


def test_path_length_of_a_linear_map_matches_its_expected_norm() -> None:
    # img = ws (reshaped) * s: J^T y = s * y, so ||J^T y||^2 summed over w_dim and averaged over num_ws is
    # s^2 * sum(y^2) / num_ws with y ~ N(0, 1/(HW)): expectation s^2 * (C H W / HW) / num_ws = s^2 * C / num_ws.
    torch.manual_seed(0)
    s, n, C, H, W = 3.0, 2048, 1, 4, 4
    ws = torch.randn(n, 2, 8, requires_grad=True)  # num_ws * w_dim = 16 = C H W
    img = (ws * s).reshape(n, C, H, W)
    lengths = path_lengths(img, ws)
    assert lengths.square().mean().item() == pytest.approx(s**2 * C * H * W / (H * W) / 2, rel=0.05)


def test_gaussian_blur_keeps_the_mean_inside_and_fades_out() -> None:
    img = torch.ones(1, 3, 32, 32)
    out = gaussian_blur(img, sigma=2.0)
    assert torch.allclose(out[:, :, 8:-8, 8:-8], img[:, :, 8:-8, 8:-8], atol=1e-6)  # taps sum to 1
    assert gaussian_blur(img, 0.2) is img  # radius floor(0.6) = 0: nothing to do
    assert blur_sigma_at(0, 10.0, 200.0) == 10.0
    assert blur_sigma_at(100_000, 10.0, 200.0) == pytest.approx(5.0)
    assert blur_sigma_at(400_000, 10.0, 200.0) == 0.0
    assert blur_sigma_at(0, 10.0, 0.0) == 0.0


def test_lazy_regularization_rescales_lr_and_betas() -> None:
    lr, betas = lazy_regularization_hyperparameters(0.002, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.002 * 16 / 17)
    assert betas == (0.0, pytest.approx(0.99 ** (16 / 17)))
    assert lazy_regularization_hyperparameters(0.002, (0.0, 0.99), None) == (0.002, (0.0, 0.99))


def run_phase(phase: str, config: LossConfig) -> tuple[nn.Module, nn.Module, dict]:
    G = tiny_generator()
    D = LinearD((3, 16, 16))
    loss = StyleGANLoss(G, D, config)
    G.requires_grad_(phase.startswith("G"))
    D.requires_grad_(phase.startswith("D"))
    torch.manual_seed(1)
    stats = loss.accumulate_gradients(
        phase,
        torch.rand(4, 3, 16, 16) * 2 - 1,
        torch.zeros(4, 0),
        torch.randn(4, 8),
        torch.zeros(4, 0),
        1.0,
        0,
    )
    return G, D, stats


@pytest.mark.parametrize("phase", ["Gmain", "Greg", "Dmain", "Dreg"])
def test_each_phase_trains_only_its_network_and_reports_finite_values(phase: str) -> None:
    G, D, stats = run_phase(phase, LossConfig(r1_gamma=1.0, pl_weight=2.0, style_mixing_prob=0.9))
    trained, other = (G, D) if phase.startswith("G") else (D, G)
    grads = [p.grad for p in trained.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in other.parameters())
    assert stats and all(math.isfinite(total) for total, _ in stats.values())


def test_dreg_penalty_matches_r1_closed_form() -> None:
    _, D, stats = run_phase("Dreg", LossConfig(r1_gamma=1.0))
    total, count = stats["Loss/r1_penalty"]
    assert total / count == pytest.approx(D.a.square().sum().item(), rel=1e-4)


def test_path_length_mean_tracks_with_its_decay() -> None:
    G = tiny_generator()
    loss = StyleGANLoss(G, LinearD((3, 16, 16)), LossConfig(pl_weight=2.0, pl_decay=0.5))
    G.requires_grad_(True)
    loss.accumulate_gradients("Greg", None, None, torch.randn(8, 8), torch.zeros(8, 0), 1.0, 0)  # type: ignore[arg-type]
    first = loss.pl_mean.item()
    assert first > 0
    loss.accumulate_gradients("Greg", None, None, torch.randn(8, 8), torch.zeros(8, 0), 1.0, 0)  # type: ignore[arg-type]
    assert loss.pl_mean.item() != first


def test_zero_weights_skip_the_regularizers() -> None:
    _, _, stats = run_phase("Dreg", LossConfig(r1_gamma=0.0))
    assert stats == {}
    _, _, stats = run_phase("Greg", LossConfig(pl_weight=0.0))
    assert stats == {}


def test_ema_follows_the_half_life_and_copies_buffers() -> None:
    assert ema_beta(10_000, 32, ema_kimg=10, ema_rampup=None) == pytest.approx(0.5 ** (32 / 10_000))
    # ramp-up: after 1000 images with ramp 0.05 the half-life is 50 images
    assert ema_beta(1000, 32, ema_kimg=10, ema_rampup=0.05) == pytest.approx(0.5 ** (32 / 50))
    G, G_ema = tiny_generator(0), tiny_generator(1)
    for b in G.buffers():
        b.add_(1.0)
    before = {k: v.clone() for k, v in G_ema.named_parameters()}
    update_ema(G_ema, G, 0.25)
    for name, p in G.named_parameters():
        expected = 0.25 * before[name] + 0.75 * p
        assert torch.allclose(dict(G_ema.named_parameters())[name], expected, atol=1e-6)
    for (_, b), (_, b_ema) in zip(G.named_buffers(), G_ema.named_buffers(), strict=True):
        assert torch.equal(b, b_ema)


def test_presets_carry_the_official_hyper_parameters() -> None:
    p = make_preset("paper256", 256)
    assert (p.batch, p.mbstd_group, p.channel_base, p.glr, p.gamma, p.ema_kimg, p.map_layers) == (
        64, 8, 16384, 0.0025, 1.0, 20.0, 8)  # fmt: skip
    c = make_preset("cifar", 32)
    assert (c.pl_weight, c.style_mixing_prob, c.d_architecture, c.ema_rampup) == (0.0, 0.0, "orig", 0.05)
    # auto at 256 px, 1 GPU: mb = min(4096 // 256, 32) = 16, gamma = 0.0002 * 256^2 / 16, ema = 16 * 10 / 32
    a = make_preset("auto", 256, gpus=1)
    assert (a.batch, a.mbstd_group, a.channel_base) == (16, 4, 16384)
    assert a.gamma == pytest.approx(0.8192) and a.ema_kimg == pytest.approx(5.0)
    t = make_preset("stylegan3-t", 256, batch=32)
    assert (t.pl_weight, t.style_mixing_prob, t.g_reg_interval, t.glr, t.dlr, t.map_layers) == (
        0.0, 0.0, None, 0.0025, 0.002, 2)  # fmt: skip
    assert t.gamma == pytest.approx(2.0) and t.blur_init_sigma == 0.0
    r = make_preset("stylegan3-r", 256, batch=32)
    assert (r.blur_init_sigma, r.blur_fade_kimg) == (10.0, 200.0)
    g = r.generator_config(256, 0, 3)
    assert isinstance(g.synthesis, StyleGAN3SynthesisConfig)
    assert (g.synthesis.channel_base, g.synthesis.conv_kernel, g.synthesis.use_radial_filters) == (
        65536,
        1,
        True,
    )
    assert g.synthesis.magnitude_ema_beta == pytest.approx(0.5 ** (32 / 20000))
    d = r.discriminator_config(256, 0, 3)
    assert d.channel_base == 32768  # only G doubles for config R
    for name in PRESET_NAMES:
        preset = make_preset(name, 64)
        assert preset.to_dict() == type(preset).from_dict(preset.to_dict()).to_dict()
    with pytest.raises(ConfigError, match="unknown --cfg"):
        make_preset("stylegan4", 64)
