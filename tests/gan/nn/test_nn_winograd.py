"""Winograd F(m x m, 3 x 3): the derived matrices compute a correlation exactly, the 2-D convolution
matches F.conv2d (the reference it replaces), and it is only chosen where it is safe."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gan.nn import winograd
from gan.nn.conv2d_resample import conv2d_resample, conv2d_resample_ref
from gan.nn.filters import setup_filter
from gan.nn.modulated_conv import shared_weight_modconv


@pytest.mark.parametrize("m", [2, 4, 6])
def test_matrices_compute_a_one_dimensional_correlation(m):
    at, g, bt = winograd.winograd_matrices(m)
    rng = np.random.default_rng(m)
    d, f = rng.standard_normal(m + 2), rng.standard_normal(3)
    y = at @ ((g @ f) * (bt @ d))
    expected = [f @ d[i : i + 3] for i in range(m)]
    np.testing.assert_allclose(y, expected, atol=1e-12)


def test_f43_matrices_are_the_integer_transforms_of_the_points_0_1_m1_2_m2():
    # The Toom-Cook construction gives integer B^T and A^T for these points (the fractions sit in G).
    at, _, bt = winograd.winograd_matrices(4)
    np.testing.assert_allclose(bt, np.round(bt), atol=1e-9)
    np.testing.assert_allclose(at[1], [0, 1, -1, 2, -2, 0])
    np.testing.assert_allclose(bt[0], [4, 0, -5, 0, 1, 0], atol=1e-9)


@pytest.mark.parametrize(
    "shape",
    [(1, 8, 16, 16, 5), (2, 3, 13, 18, 4), (3, 16, 4, 4, 16), (1, 2, 1, 7, 3)],
    ids=["square", "ragged-tiles", "one-tile", "one-row"],
)
@pytest.mark.parametrize("m", [2, 4])
def test_convolution_matches_conv2d(shape, m):
    n, c, h, w, o = shape
    torch.manual_seed(0)
    x, weight = torch.randn(n, c, h, w), torch.randn(o, c, 3, 3) / (9 * c) ** 0.5
    expected = F.conv2d(x.double(), weight.double(), padding=1)
    y = winograd.conv3x3(x, winograd.transform_weight(weight, m), m)
    assert y.shape == expected.shape
    torch.testing.assert_close(y.double(), expected, atol=2e-5, rtol=0)


def test_chunked_tiles_give_the_same_result(monkeypatch):
    torch.manual_seed(0)
    x, weight = torch.randn(2, 8, 24, 20), torch.randn(6, 8, 3, 3) / 72**0.5
    u = winograd.transform_weight(weight)
    whole = winograd.conv3x3(x, u)
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)  # one row of tiles per chunk
    torch.testing.assert_close(winograd.conv3x3(x, u), whole, atol=2e-5, rtol=0)


def test_wrong_transform_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        winograd.conv3x3(torch.randn(1, 4, 8, 8), winograd.transform_weight(torch.randn(2, 3, 3, 3)))


def test_cached_transform_follows_in_place_updates_and_dies_with_the_weight():
    weight = torch.randn(4, 4, 3, 3)
    first = winograd.cached_transform(weight)
    assert winograd.cached_transform(weight) is first
    with torch.no_grad():
        weight.mul_(2)  # load_state_dict and EMA steps update in place
    second = winograd.cached_transform(weight)
    torch.testing.assert_close(second, 2 * first)
    key = id(weight)
    del weight
    assert key not in winograd._transformed


def _big_case(grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(1, winograd.MIN_CHANNELS, 16, 16, requires_grad=grad)
    return x, torch.randn(winograd.MIN_CHANNELS, winograd.MIN_CHANNELS, 3, 3)


def test_eligibility():
    x, w = _big_case()
    assert winograd.eligible(x, w, 1, (1, 1))
    assert not winograd.eligible(x, w, 2, (1, 1))  # grouped
    assert not winograd.eligible(x, w, 1, (0, 0))  # not 'same'
    assert not winograd.eligible(x[:, :, :8, :8], w, 1, (1, 1))  # too small an image
    assert not winograd.eligible(x.double(), w.double(), 1, (1, 1))
    assert not winograd.eligible(x[:, :64], w[:64, :64], 1, (1, 1))  # too few channels
    xg, _ = _big_case(grad=True)
    assert not winograd.eligible(xg, w, 1, (1, 1))  # training: autograd must see the weight
    with torch.no_grad():
        assert winograd.eligible(xg, w, 1, (1, 1))


def test_conv2d_resample_takes_the_winograd_route_and_agrees_with_the_reference(monkeypatch):
    torch.manual_seed(0)
    x, w = _big_case()
    calls = []
    original = winograd.conv3x3
    monkeypatch.setattr(winograd, "conv3x3", lambda *a: calls.append(1) or original(*a))
    y = conv2d_resample(x, w, padding=1)
    assert calls == [1]
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("separable", [False, True], ids=["2-D filter", "1-D filter"])
def test_upsampling_layer_as_four_phase_convolutions_matches_the_reference(separable):
    # StyleGAN2's conv0: true 3x3 convolution, 2x upsampling through the [1, 3, 3, 1] FIR, padding 1.
    torch.manual_seed(0)
    x, w = torch.randn(2, 6, 5, 7), torch.randn(4, 6, 3, 3) / 54**0.5
    f = setup_filter([1, 3, 3, 1])
    expected = conv2d_resample_ref(x.double(), w.double(), f, up=2, padding=1, flip_weight=False)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8 if separable else f
    assert winograd.fits_up2(torch.zeros(1, 1, 64, 64), w, taps, (1, 1, 1, 1))
    phases = winograd.up2_phase_weight(w, taps)
    assert phases.shape == (16, 6, 3, 3)
    scale = torch.rand(2, 6) + 0.5
    y = winograd.up2_conv3x3(x, winograd.transform_weight(phases), in_scale=scale)
    expected_scaled = conv2d_resample_ref(
        (x * scale[:, :, None, None]).double(), w.double(), f, up=2, padding=1, flip_weight=False
    )
    assert y.shape == expected.shape == (2, 4, 10, 14)
    torch.testing.assert_close(y.double(), expected_scaled, atol=2e-5, rtol=0)


def test_up2_route_only_fits_its_geometry():
    x, w, f = torch.zeros(1, 4, 64, 64), torch.randn(4, 4, 3, 3), setup_filter([1, 3, 3, 1])
    assert winograd.fits_up2(x, w, f, (1, 1, 1, 1))
    assert not winograd.fits_up2(x[:, :, :32], w, f, (1, 1, 1, 1))  # too small to pay
    assert not winograd.fits_up2(x, w, None, (1, 1, 1, 1))
    assert not winograd.fits_up2(x, w, f, (0, 0, 0, 0))
    assert not winograd.fits_up2(x, torch.randn(4, 4, 1, 1), f, (1, 1, 1, 1))
    assert not winograd.fits_up2(x, w, setup_filter([1, 2, 1]), (1, 1, 1, 1))


def test_shared_weight_modconv_takes_the_up2_route_on_the_cpu(monkeypatch):
    torch.manual_seed(0)
    c = winograd.MIN_CHANNELS
    x, w, s = torch.randn(1, c, 64, 64), torch.randn(c, c, 3, 3) / (9 * c) ** 0.5, torch.randn(1, c)
    f = setup_filter([1, 3, 3, 1])
    calls = []
    original = winograd.up2_conv3x3
    monkeypatch.setattr(winograd, "up2_conv3x3", lambda *a, **k: calls.append(1) or original(*a, **k))
    y, d = shared_weight_modconv(x, w, s, up=2, resample_filter=f, padding=1, flip_weight=False)
    assert calls == [1] and d is not None
    expected = conv2d_resample_ref(x * s[:, :, None, None], w, f, up=2, padding=1, flip_weight=False)
    torch.testing.assert_close(y, expected, atol=1e-4, rtol=0)


def test_weights_made_under_inference_mode_are_transformed_without_the_cache():
    # Such tensors have no version counter; the equalized layers make their scaled weights per call.
    with torch.inference_mode():
        w = torch.randn(4, 4, 3, 3)
        u = winograd.cached_transform(w)
        assert (id(w), "same") not in winograd._transformed
    torch.testing.assert_close(u, winograd.transform_weight(w))
