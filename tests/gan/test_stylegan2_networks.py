"""StyleGAN2(-ADA) mapping, synthesis, generator and discriminator: invariants on tiny configs."""

import math

import pytest
import torch

from gan.config import (
    DiscriminatorConfig,
    GeneratorConfig,
    MappingConfig,
    StyleGAN2SynthesisConfig,
)
from gan.errors import ConfigError
from gan.generator import Generator, build_generator
from gan.stylegan2.discriminator import Discriminator, MinibatchStdLayer
from gan.stylegan2.mapping import MappingNetwork

TINY = StyleGAN2SynthesisConfig(channel_base=128, channel_max=16)


def tiny_config(resolution=16, c_dim=0, architecture="skip", **synthesis) -> GeneratorConfig:
    synth = StyleGAN2SynthesisConfig(channel_base=128, channel_max=16, architecture=architecture, **synthesis)
    return GeneratorConfig(
        z_dim=8,
        c_dim=c_dim,
        w_dim=8,
        img_resolution=resolution,
        mapping=MappingConfig(num_layers=2),
        synthesis=synth,
    )


@pytest.fixture
def mapping() -> MappingNetwork:
    torch.manual_seed(0)
    net = MappingNetwork(z_dim=8, c_dim=3, w_dim=8, num_ws=6, config=MappingConfig(num_layers=2)).eval()
    with torch.no_grad():
        net.w_avg.normal_()
    return net


def test_truncation_psi_one_is_identity_and_psi_zero_is_w_avg(mapping):
    z, c = torch.randn(4, 8), torch.eye(3)[[0, 1, 2, 0]]
    ws = mapping(z, c)
    assert ws.shape == (4, 6, 8)
    assert torch.equal(ws[:, 0], ws[:, 5])  # one w broadcast to every layer
    assert torch.equal(mapping(z, c, psi=1.0, cutoff=2), ws)
    assert torch.allclose(mapping(z, c, psi=0.0), mapping.w_avg.expand(4, 6, 8))
    half = mapping(z, c, psi=0.5)
    assert torch.allclose(half, mapping.w_avg + 0.5 * (ws - mapping.w_avg), atol=1e-6)


def test_truncation_cutoff_touches_only_the_first_ws(mapping):
    z, c = torch.randn(2, 8), torch.eye(3)[[0, 1]]
    ws = mapping(z, c)
    cut = mapping(z, c, psi=0.0, cutoff=2)
    assert torch.allclose(cut[:, :2], mapping.w_avg.expand(2, 2, 8))
    assert torch.equal(cut[:, 2:], ws[:, 2:])


def test_w_avg_moves_towards_the_batch_mean_only_with_update_emas(mapping):
    z, c = torch.randn(16, 8), torch.eye(3)[torch.arange(16) % 3]
    before = mapping.w_avg.clone()
    mapping(z, c)
    assert torch.equal(mapping.w_avg, before)
    w = mapping(z, c)[:, 0].mean(dim=0)
    mapping(z, c, update_emas=True)
    assert torch.allclose(mapping.w_avg, w + 0.995 * (before - w), atol=1e-6)


def test_mapping_normalizes_z_so_its_scale_does_not_matter(mapping):
    z, c = torch.randn(2, 8), torch.eye(3)[[0, 1]]
    assert torch.allclose(mapping(z, c), mapping(z * 7, c), atol=1e-5)
    assert not torch.allclose(mapping(z, c), mapping(z, torch.eye(3)[[2, 2]]), atol=1e-3)


def test_mapping_rejects_wrong_inputs(mapping):
    with pytest.raises(ValueError):
        mapping(torch.randn(2, 7), torch.eye(3)[[0, 1]])
    with pytest.raises(ValueError):
        mapping(torch.randn(2, 8), None)
    uncond = MappingNetwork(8, 0, 8, num_ws=2, config=MappingConfig(num_layers=1, w_avg_beta=None))
    assert uncond(torch.randn(2, 8), torch.zeros(2, 0)).shape == (2, 2, 8)  # an empty c is what callers pass
    with pytest.raises(ValueError):
        uncond(torch.randn(2, 8), torch.ones(2, 3))
    with pytest.raises(ConfigError):
        uncond(torch.randn(2, 8), None, psi=0.7)  # no w_avg to truncate towards


def test_mapping_parameter_paths_are_official(mapping):
    keys = set(mapping.state_dict())
    assert keys == {"embed.weight", "embed.bias", "fc0.weight", "fc0.bias", "fc1.weight", "fc1.bias", "w_avg"}


@pytest.mark.parametrize("resolution", [4, 8, 16, 32, 64])
def test_generator_builds_and_runs_at_every_resolution(resolution):
    torch.manual_seed(0)
    G = build_generator(tiny_config(resolution)).eval()
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2 == G.config.num_ws
    img = G(torch.randn(2, 8), None)
    assert img.shape == (2, 3, resolution, resolution)
    assert torch.isfinite(img).all() and img.abs().max() > 0


@pytest.mark.parametrize("architecture", ["skip", "resnet", "orig"])
def test_architectures_build_run_and_keep_official_paths(architecture):
    torch.manual_seed(0)
    G = build_generator(tiny_config(16, architecture=architecture)).eval()
    keys = set(G.state_dict())
    assert {"synthesis.b4.const", "synthesis.b16.conv0.affine.weight", "synthesis.b16.torgb.weight"} <= keys
    assert {
        "synthesis.b8.conv1.noise_const",
        "synthesis.b8.conv1.noise_strength",
        "synthesis.b8.resample_filter",
    } <= keys
    assert ("synthesis.b8.torgb.weight" in keys) == (architecture == "skip")
    assert ("synthesis.b8.skip.weight" in keys) == (architecture == "resnet")
    assert G(torch.randn(2, 8), None).shape == (2, 3, 16, 16)


def test_noise_modes():
    torch.manual_seed(0)
    G = build_generator(tiny_config(16)).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    z = torch.randn(1, 8)
    const_a, const_b = G(z, None, noise_mode="const"), G(z, None, noise_mode="const")
    assert torch.equal(const_a, const_b)
    assert not torch.allclose(G(z, None, noise_mode="random"), G(z, None, noise_mode="random"))
    none = G(z, None, noise_mode="none")
    assert not torch.allclose(none, const_a)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.zero_()
    assert torch.allclose(G(z, None, noise_mode="random"), G(z, None, noise_mode="none"))
    # The one refusal every layer uses (gan.vocabulary): a GanError, so the CLI says exit 2 and HTTP 422.
    with pytest.raises(ConfigError, match="invalid noise mode 'loud'"):
        G(z, None, noise_mode="loud")


def test_batched_equals_one_at_a_time_and_fused_equals_unfused():
    torch.manual_seed(0)
    G = build_generator(tiny_config(16, c_dim=2)).eval()
    z, c = torch.randn(3, 8), torch.eye(2)[[0, 1, 1]]
    batch = G(z, c, psi=0.7)
    singles = torch.cat([G(z[i : i + 1], c[i : i + 1], psi=0.7) for i in range(3)])
    assert torch.allclose(batch, singles, atol=1e-5)
    assert torch.allclose(G(z, c, fused_modconv=False), G(z, c, fused_modconv=True), atol=1e-4)


def test_ws_layout_each_layer_uses_its_own_w():
    # Changing ws[i] must change the image: every index is consumed somewhere (no w left unused).
    torch.manual_seed(0)
    G = build_generator(tiny_config(16)).eval()
    ws = G.mapping(torch.randn(1, 8), None)
    base = G.synthesis(ws)
    for i in range(G.num_ws):
        bumped = ws.clone()
        bumped[:, i] += 1.0
        assert not torch.allclose(G.synthesis(bumped), base), f"ws[{i}] is not used"


def test_conv_clamp_bounds_the_rgb_output():
    torch.manual_seed(0)
    G = build_generator(tiny_config(16, conv_clamp=0.05)).eval()
    # skip: the image is the sum of one clamped toRGB per block, upsampled with a unit-DC filter whose
    # taps are positive, so |img| <= number of blocks x clamp.
    assert G(torch.randn(4, 8), None).abs().max() <= 3 * 0.05 + 1e-6


def test_backward_reaches_every_generator_parameter():
    torch.manual_seed(0)
    G = build_generator(tiny_config(16, architecture="resnet", c_dim=2)).train()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
    img = G(torch.randn(2, 8), torch.eye(2), noise_mode="random")
    img.square().mean().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_generator_rejects_mismatched_config():
    with pytest.raises(ConfigError):
        GeneratorConfig(architecture="stylegan3-t", synthesis=TINY)


def tiny_d_config(c_dim=0, architecture="resnet", resolution=16) -> DiscriminatorConfig:
    return DiscriminatorConfig(
        c_dim=c_dim,
        img_resolution=resolution,
        architecture=architecture,
        channel_base=128,
        channel_max=16,
        mbstd_group_size=2,
        mapping=MappingConfig(num_layers=2, w_avg_beta=None),
    )


@pytest.mark.parametrize("architecture", ["resnet", "skip", "orig"])
@pytest.mark.parametrize("c_dim", [0, 3])
def test_discriminator_runs_and_backpropagates(architecture, c_dim):
    torch.manual_seed(0)
    D = Discriminator(tiny_d_config(c_dim, architecture))
    img = torch.randn(4, 3, 16, 16, requires_grad=True)
    c = torch.eye(3)[[0, 1, 2, 0]] if c_dim else None
    logits = D(img, c)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert all(p.grad is not None for p in D.parameters())


def test_discriminator_paths_and_conditioning():
    torch.manual_seed(0)
    D = Discriminator(tiny_d_config(c_dim=3, resolution=32))
    keys = set(D.state_dict())
    assert {
        "b32.fromrgb.weight",
        "b32.conv0.weight",
        "b32.conv1.bias",
        "b32.skip.weight",
        "b16.skip.weight",
    } <= keys
    assert {
        "b4.conv.weight",
        "b4.fc.weight",
        "b4.out.weight",
        "mapping.embed.weight",
        "mapping.fc1.weight",
    } <= keys
    assert "b16.fromrgb.weight" not in keys and "mapping.w_avg" not in keys
    assert D.b4.out.weight.shape[0] == D.cmap_dim == 16  # cmap_dim defaults to the 4x4 channels
    img = torch.randn(2, 3, 32, 32)
    a = D(img, torch.eye(3)[[0, 0]])
    b = D(img, torch.eye(3)[[1, 1]])
    assert not torch.allclose(a, b)  # the label changes the logit through the projection


def test_minibatch_std_appends_group_std():
    x = torch.zeros(4, 2, 3, 3)
    x[1] = 2.0  # groups are samples {0, 2} and {1, 3}: sample i is in group i % (N / G)
    y = MinibatchStdLayer(group_size=2)(x)
    assert y.shape == (4, 3, 3, 3)
    assert torch.allclose(y[[1, 3], 2], torch.tensor(1.0), atol=1e-3)  # std of {2, 0} is 1
    assert torch.allclose(y[[0, 2], 2], torch.tensor(0.0), atol=1e-3)
    with pytest.raises(ValueError):
        MinibatchStdLayer(group_size=4)(torch.zeros(6, 2, 3, 3))


def test_discriminator_rejects_wrong_images():
    D = Discriminator(tiny_d_config())
    with pytest.raises(ValueError):
        D(torch.randn(2, 3, 8, 8), None)
    with pytest.raises(ConfigError):
        Discriminator(tiny_d_config(resolution=4))


def test_generator_is_an_nn_module_with_attributes():
    G = Generator(tiny_config(8, c_dim=2))
    assert (G.z_dim, G.c_dim, G.w_dim, G.img_resolution, G.img_channels) == (8, 2, 8, 8, 3)


def test_fp16_blocks_track_fp32(monkeypatch):
    # fp16 runs on CUDA only; to exercise its numerics (pre-normalized modulation, clamping, dtype hand-
    # over between blocks) on a CPU-only machine, lift the device condition for this test.
    import gan.stylegan2.synthesis as synthesis

    torch.manual_seed(0)
    G = build_generator(tiny_config(16, num_fp16_res=2, conv_clamp=256)).eval()
    assert [getattr(G.synthesis, f"b{r}").use_fp16 for r in (4, 8, 16)] == [False, True, True]
    z = torch.randn(2, 8)
    ref = G(z, None)
    monkeypatch.setattr(
        synthesis,
        "block_dtype",
        lambda use_fp16, device, force_fp32: torch.float16 if use_fp16 and not force_fp32 else torch.float32,
    )
    half = G(z, None)
    assert half.dtype == torch.float32  # images always leave in fp32
    # fp16 keeps 11 significant bits (~5e-4 relative per op); a few layers accumulate to ~1e-3 of the range.
    assert (half - ref).abs().max() < 1e-2 * ref.abs().max()
    assert torch.equal(G(z, None, force_fp32=True), ref)
