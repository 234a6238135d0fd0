"""StyleGAN3 synthesis: filter design, band schedule, Fourier input and transforms, magnitude EMA.

Tiny networks (32 px, 16 channels) on CPU. Parity with NVIDIA's outputs lives in
test_stylegan3_parity.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from gan.config import StyleGAN3SynthesisConfig
from gan.errors import ConfigError
from gan.stylegan3.filtered_lrelu import filtered_lrelu
from gan.stylegan3.filters_design import design_lowpass_filter, jinc_lowpass, kaiser_lowpass
from gan.stylegan3.fourier_input import FourierInput, make_transform
from gan.stylegan3.synthesis import SynthesisNetwork, band_schedule

W_DIM = 16
RES = 32


def tiny_config(radial: bool = False, **overrides: object) -> StyleGAN3SynthesisConfig:
    """Config T (or R with radial=True, as the official train.py sets it up) with 16 channels at most."""
    kwargs: dict[str, object] = dict(channel_base=512, channel_max=16, num_layers=6, num_fp16_res=2)
    if radial:
        kwargs.update(conv_kernel=1, use_radial_filters=True)
    kwargs.update(overrides)
    return StyleGAN3SynthesisConfig(**kwargs)  # type: ignore[arg-type]


def tiny_network(radial: bool = False, seed: int = 0, **overrides: object) -> SynthesisNetwork:
    torch.manual_seed(seed)
    return SynthesisNetwork(W_DIM, RES, 3, tiny_config(radial, **overrides)).eval()


def random_ws(net: SynthesisNetwork, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn([n, net.num_ws, net.w_dim], generator=torch.Generator().manual_seed(seed))


def response_1d(taps: torch.Tensor, f: float, fs: float) -> float:
    n = np.arange(taps.shape[0])
    return float(abs(np.sum(taps.double().numpy() * np.exp(-2j * np.pi * f * n / fs))))


def response_2d(taps: torch.Tensor, fx: float, fy: float, fs: float) -> float:
    n = np.arange(taps.shape[0])
    phase = np.exp(-2j * np.pi * (fx * n[None, :] + fy * n[:, None]) / fs)
    return float(abs(np.sum(taps.double().numpy() * phase)))


# --- filter design -----------------------------------------------------------------------------------


def designed_filters(radial: bool = False) -> list[tuple[str, torch.Tensor, float, float, float]]:
    """(name, taps, cutoff, half_width, fs) of every filter a 256 px network designs: the real bands."""
    net = SynthesisNetwork(4, 256, 3, StyleGAN3SynthesisConfig(channel_base=2048, channel_max=4))
    half_widths = net.schedule.half_widths
    found = []
    for idx, name in enumerate(net.layer_names[:-1]):  # toRGB has none
        layer = getattr(net, name)
        fs = layer.tmp_sampling_rate
        found.append((f"{name}.up", layer.up_filter, layer.in_cutoff, half_widths[max(idx - 1, 0)], fs))
        found.append((f"{name}.down", layer.down_filter, layer.out_cutoff, half_widths[idx], fs))
    return found


def test_kaiser_filters_pass_dc_and_meet_their_stopband_attenuation() -> None:
    for name, taps, cutoff, half_width, fs in designed_filters():
        assert taps.ndim == 1 and taps.dtype == torch.float32, name
        assert taps.sum().item() == pytest.approx(1.0, abs=1e-6), name  # unit DC gain
        assert torch.equal(taps, taps.flip(0)), name  # symmetric: linear phase, no shift
        assert response_1d(taps, 0.0, fs) == pytest.approx(1.0, abs=1e-6), name
        assert 0.4 < response_1d(taps, cutoff, fs) < 0.9, name  # firwin's cutoff: the half-amplitude point
        # A Kaiser design has stopband ripple about 10^(-A/20) for the attenuation A its length and
        # transition width allow; allow twice that for the short (6 taps per sample) filters.
        attenuation = scipy.signal.kaiser_atten(taps.shape[0], 2 * half_width / (fs / 2))
        for f in np.linspace(cutoff + half_width, fs / 2, 32):
            assert response_1d(taps, f, fs) < 2 * 10 ** (-attenuation / 20), f"{name} leaks at {f:g}"


def test_jinc_lowpass_is_radially_symmetric_with_unit_dc_gain() -> None:
    numtaps, cutoff, fs = 12, 3.17, 32
    taps = jinc_lowpass(numtaps, cutoff, 2 * 4.8, fs)
    assert taps.shape == (numtaps, numtaps)
    assert taps.sum().item() == pytest.approx(1.0, abs=1e-6)
    # The 8 symmetries of the square (transpose, flips) leave a radial filter unchanged.
    assert torch.equal(taps, taps.t())
    assert torch.equal(taps, taps.flip(0)) and torch.equal(taps, taps.flip(1))
    # Its frequency response depends on |f| only: along an axis and along the diagonal agree (up to
    # the separable Kaiser window, which is not exactly radial).
    for r in (0.0, cutoff / 2, cutoff, 1.5 * cutoff):
        along_axis = response_2d(taps, r, 0.0, fs)
        along_diagonal = response_2d(taps, r / math.sqrt(2), r / math.sqrt(2), fs)
        assert along_axis == pytest.approx(along_diagonal, abs=0.01), r
    assert response_2d(taps, 0.0, 0.0, fs) == pytest.approx(1.0, abs=1e-6)
    assert response_2d(taps, 0.45 * fs, 0.0, fs) < 0.01


def test_jinc_lowpass_with_odd_taps_takes_the_limit_at_the_centre() -> None:
    taps = jinc_lowpass(7, 3.0, 4.0, 32)
    assert torch.isfinite(taps).all()
    assert taps.argmax().item() == 3 * 7 + 3  # the peak is the centre tap


def test_design_lowpass_filter_identity_and_bad_bands() -> None:
    assert design_lowpass_filter(1, 2.0, 4.0, 32) is None  # no resampling, no filter buffer
    assert design_lowpass_filter(12, 2.0, 4.0, 32).shape == (12,)
    assert design_lowpass_filter(12, 2.0, 4.0, 32, radial=True).shape == (12, 12)
    with pytest.raises(ConfigError, match="cutoff"):
        design_lowpass_filter(12, 16.0, 4.0, 32)  # at Nyquist
    with pytest.raises(ConfigError, match="width"):
        design_lowpass_filter(12, 2.0, 0.0, 32)


# --- band schedule -----------------------------------------------------------------------------------


def test_band_schedule_follows_the_papers_progression() -> None:
    config = StyleGAN3SynthesisConfig()  # the official 1024 px defaults
    s = band_schedule(config, 1024, 3)
    n, critical = config.num_layers, config.num_critical
    assert len(s.cutoffs) == n + 1
    assert s.cutoffs[0] == config.first_cutoff
    assert all(a < b for a, b in zip(s.cutoffs[: n - critical], s.cutoffs[1 : n - critical + 1], strict=True))
    assert s.cutoffs[n - critical :] == (512.0,) * (critical + 1)  # critically sampled at Nyquist
    for c, t, rate, half in zip(s.cutoffs, s.stopbands, s.sampling_rates, s.half_widths, strict=True):
        assert rate & (rate - 1) == 0 and rate <= 1024  # powers of two, at most the image resolution
        assert rate >= min(2 * t, 1024)  # the stopband fits below Nyquist where it can
        assert c + half == pytest.approx(max(t, rate / 2))
    assert s.sizes[-2:] == (1024, 1024)
    assert s.sizes[0] == s.sampling_rates[0] + 2 * config.margin_size
    assert s.channels[0] == config.channel_max and s.channels[-1] == 3


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ConfigError, match="num_critical"):
        band_schedule(StyleGAN3SynthesisConfig(num_layers=2, num_critical=2), 64, 3)
    with pytest.raises(ConfigError, match="first_cutoff"):
        band_schedule(StyleGAN3SynthesisConfig(first_cutoff=40.0), 64, 3)
    with pytest.raises(ConfigError, match="channel_base"):
        band_schedule(StyleGAN3SynthesisConfig(channel_base=64), 256, 3)


# --- the network -------------------------------------------------------------------------------------


@pytest.mark.parametrize("radial", [False, True], ids=["T", "R"])
@pytest.mark.parametrize("res", [16, 32, 64])
def test_synthesis_builds_and_runs(radial: bool, res: int) -> None:
    torch.manual_seed(0)
    net = SynthesisNetwork(W_DIM, res, 3, tiny_config(radial)).eval()
    assert net.num_ws == net.config.num_layers + 2
    with torch.no_grad():
        img = net(random_ws(net))
    assert img.shape == (2, 3, res, res) and img.dtype == torch.float32
    assert torch.isfinite(img).all()
    assert img[0].std() > 1e-3 and not torch.allclose(img[0], img[1])  # depends on w

    # Official parameter paths: L{idx}_{size}_{channels}, each with the official members.
    sizes, channels = net.schedule.sizes, net.schedule.channels
    assert net.layer_names == [f"L{i}_{sizes[i]}_{channels[i]}" for i in range(net.num_layers + 1)]
    keys = set(net.state_dict())
    assert {
        f"input.{k}" for k in ("weight", "affine.weight", "affine.bias", "transform", "freqs", "phases")
    } <= keys
    for name in net.layer_names:
        layer = getattr(net, name)
        for member in ("weight", "bias", "affine.weight", "affine.bias", "magnitude_ema"):
            assert f"{name}.{member}" in keys
        kernel = 1 if (radial or layer.is_torgb) else 3
        assert layer.weight.shape[2:] == (kernel, kernel)
        if layer.is_torgb:  # linear, no resampling: no filter buffers, as in official pickles
            assert f"{name}.up_filter" not in keys and f"{name}.down_filter" not in keys
            continue
        assert layer.up_filter.ndim == 1  # upsampling is always separable
        radial_down = radial and not layer.is_critically_sampled
        assert layer.down_filter.ndim == (2 if radial_down else 1)


def test_ws_geometry_is_exposed_per_w_index() -> None:
    net = tiny_network()
    assert len(net.ws_sizes) == len(net.ws_sampling_rates) == len(net.ws_cutoffs) == net.num_ws
    assert net.ws_sizes[0] == net.input.size and net.ws_sizes[-1] == RES
    assert list(net.ws_sampling_rates) == sorted(net.ws_sampling_rates)  # coarse to fine
    assert net.ws_cutoffs[-1] == RES / 2


def test_noise_mode_is_accepted_and_ignored() -> None:
    net = tiny_network()
    ws = random_ws(net)
    with torch.no_grad():
        images = [net(ws, noise_mode=mode) for mode in ("const", "random", "none")]
    assert torch.equal(images[0], images[1]) and torch.equal(images[0], images[2])
    with pytest.raises(ConfigError, match="invalid noise mode 'loud'"):
        net(ws, noise_mode="loud")  # type: ignore[arg-type]


def test_fp16_layers_are_the_top_resolutions_and_cpu_stays_fp32() -> None:
    net = tiny_network(num_fp16_res=1)
    flags = {name: getattr(net, name).use_fp16 for name in net.layer_names}
    for name, flag in flags.items():
        assert flag == (getattr(net, name).out_sampling_rate * 2 > RES)
    assert any(flags.values()) and not all(flags.values())
    ws = random_ws(net)
    with torch.no_grad():
        assert torch.equal(net(ws), net(ws, force_fp32=True))  # CPU never runs fp16


def test_batch_matches_one_at_a_time() -> None:
    net = tiny_network(radial=True)
    ws = random_ws(net, n=3)
    with torch.no_grad():
        batch = net(ws)
        single = torch.cat([net(ws[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)


# --- transforms --------------------------------------------------------------------------------------


def test_make_transform_is_the_inverse_of_the_image_transform() -> None:
    m = make_transform(translate=(0.25, -0.1), rotate_deg=30.0)
    assert m.shape == (3, 3) and m.dtype == torch.float32
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    image = torch.tensor([[c, s, 0.25], [-s, c, -0.1], [0, 0, 1]])
    torch.testing.assert_close(m @ image, torch.eye(3), atol=1e-6, rtol=0)
    assert torch.equal(make_transform(), torch.eye(3))


def test_identity_transform_changes_nothing_and_others_do() -> None:
    net = tiny_network()
    ws = random_ws(net)
    with torch.no_grad():
        stored = net(ws)
        assert torch.equal(net(ws, transform=torch.eye(3)), stored)
        moved = net(ws, transform=make_transform(translate=(0.1, 0.0)))
        turned = net(ws, transform=make_transform(rotate_deg=20.0))
    assert (moved - stored).abs().max() > 0.01 and (turned - stored).abs().max() > 0.01


def test_transform_argument_equals_storing_it_and_can_differ_per_sample() -> None:
    net = tiny_network()
    ws = random_ws(net)
    m0, m1 = make_transform(translate=(0.1, 0.2)), make_transform(rotate_deg=45.0)
    with torch.no_grad():
        per_sample = net(ws, transform=torch.stack([m0, m1]))
        net.input.transform.copy_(m0)
        stored0 = net(ws[:1])
        net.input.transform.copy_(m1)
        stored1 = net(ws[1:])
    torch.testing.assert_close(per_sample, torch.cat([stored0, stored1]), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="transform"):
        net(ws, transform=torch.eye(2))


def test_input_translation_moves_the_content_by_the_asked_amount() -> None:
    torch.manual_seed(0)
    fourier = FourierInput(W_DIM, channels=8, size=20, sampling_rate=16, bandwidth=2.0)
    w = torch.randn(1, W_DIM)
    one_pixel = 1 / fourier.sampling_rate  # in image units
    with torch.no_grad():
        still = fourier(w)
        right = fourier(w, transform=make_transform(translate=(one_pixel, 0.0)))
        down = fourier(w, transform=make_transform(translate=(0.0, one_pixel)))
        quarter_turn = fourier(w, transform=make_transform(rotate_deg=90.0))
    # Content moves towards +x (+y): pixel k of the moved image shows what pixel k - 1 showed.
    torch.testing.assert_close(right[..., :, 1:], still[..., :, :-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(down[..., 1:, :], still[..., :-1, :], atol=1e-5, rtol=0)
    # A quarter turn keeps every frequency's magnitude (no damping) and maps the square grid onto itself;
    # a positive angle turns the content counter-clockwise as displayed (rows down, columns right).
    torch.testing.assert_close(quarter_turn, torch.rot90(still, k=1, dims=(2, 3)), atol=1e-5, rtol=0)


# --- magnitude EMA -----------------------------------------------------------------------------------


def test_magnitude_ema_updates_only_when_asked() -> None:
    net = tiny_network()
    ws = random_ws(net)
    before = {name: getattr(net, name).magnitude_ema.clone() for name in net.layer_names}
    with torch.no_grad():
        net(ws)
    assert all(torch.equal(getattr(net, name).magnitude_ema, before[name]) for name in net.layer_names)

    with torch.no_grad():
        net(ws, update_emas=True)
        first_input = net.input(ws[:, 0])
    first = getattr(net, net.layer_names[0])
    expected = first_input.square().mean().lerp(before[net.layer_names[0]], first.magnitude_ema_beta)
    torch.testing.assert_close(first.magnitude_ema, expected, atol=1e-7, rtol=1e-6)
    assert all(not torch.equal(getattr(net, name).magnitude_ema, before[name]) for name in net.layer_names)


def test_magnitude_ema_normalises_the_layer_input() -> None:
    # Scaling a layer's input by k and its magnitude EMA by k^2 leaves the layer's output unchanged.
    net = tiny_network()
    layer = getattr(net, net.layer_names[1])
    x = torch.randn(2, layer.in_channels, layer.in_size, layer.in_size)
    w = torch.randn(2, W_DIM)
    with torch.no_grad():
        reference = layer(x, w)
        layer.magnitude_ema.fill_(9.0)
        scaled = layer(3 * x, w)
    torch.testing.assert_close(scaled, reference, atol=1e-5, rtol=1e-4)


# --- filtered leaky ReLU -----------------------------------------------------------------------------


def test_filtered_lrelu_keeps_a_positive_constant() -> None:
    # Unit DC gain filters and up^2 gain: a constant c > 0 comes out as gain * c away from the borders.
    f = kaiser_lowpass(12, 4.0, 8.0, 32)
    x = torch.full([1, 2, 16, 16], 0.5)
    y = filtered_lrelu(x, f, f, torch.tensor([0.25, -0.25]), up=2, down=2, padding=(11, 10, 11, 10), gain=2.0)
    assert y.shape == (1, 2, 16, 16)
    centre = y[..., 6:10, 6:10]
    torch.testing.assert_close(centre[:, 0], torch.full_like(centre[:, 0], 1.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(centre[:, 1], torch.full_like(centre[:, 1], 0.5), atol=1e-5, rtol=0)


def test_filtered_lrelu_clamps_and_refuses_resampling_without_filter() -> None:
    x = torch.full([1, 1, 4, 4], 100.0)
    y = filtered_lrelu(x, None, None, None, gain=1.0, slope=1.0, clamp=10.0)
    assert torch.equal(y, torch.full_like(x, 10.0))
    with pytest.raises(ConfigError, match="filter"):
        filtered_lrelu(x, None, None, None, up=2)


def test_generator_passes_the_transform_through() -> None:
    # The contract G1 relies on: build_generator picks this network for stylegan3-t / -r and hands
    # `transform=` on to it, so a batch can carry different translate/rotate requests.
    from gan.config import GeneratorConfig, MappingConfig
    from gan.generator import build_generator

    torch.manual_seed(0)
    config = GeneratorConfig(
        architecture="stylegan3-r",
        z_dim=W_DIM,
        w_dim=W_DIM,
        img_resolution=RES,
        mapping=MappingConfig(num_layers=2),
        synthesis=tiny_config(radial=True),
    )
    G = build_generator(config).eval()
    assert isinstance(G.synthesis, SynthesisNetwork) and G.num_ws == config.num_ws
    z = torch.randn(2, W_DIM)
    with torch.no_grad():
        plain = G(z, None)
        assert torch.equal(G(z, None, transform=torch.eye(3)), plain)
        turned = G(z, None, transform=torch.stack([torch.eye(3), make_transform(rotate_deg=30.0)]))
    torch.testing.assert_close(turned[0], plain[0], atol=1e-6, rtol=0)
    assert (turned[1] - plain[1]).abs().max() > 0.01
