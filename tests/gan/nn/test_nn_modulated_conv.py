"""Modulated convolution: demodulation normalizes each output channel; both routes agree."""

import pytest
import torch
import torch.nn.functional as F

from gan.nn.filters import setup_filter
from gan.nn.modulated_conv import (
    demodulation_coefficients,
    demodulation_coefficients_from_styles,
    modulate,
    modulated_conv2d,
    shared_weight_modconv,
)


def test_demodulated_weights_have_unit_norm_per_output_channel():
    torch.manual_seed(0)
    weight = torch.randn(6, 4, 3, 3)
    styles = torch.randn(5, 4) * 3
    w = modulate(weight, styles)
    w = w * demodulation_coefficients(w).reshape(5, 6, 1, 1, 1)
    norms = w.square().sum(dim=[2, 3, 4]).sqrt()
    assert torch.allclose(norms, torch.ones(5, 6), atol=1e-5)


def test_modulation_without_demodulation_is_input_scaling():
    torch.manual_seed(0)
    x, weight, styles = torch.randn(2, 4, 8, 8), torch.randn(3, 4, 1, 1), torch.randn(2, 4)
    y = modulated_conv2d(x, weight, styles, demodulate=False)
    expected = F.conv2d(x * styles[:, :, None, None], weight)
    assert torch.allclose(y, expected, atol=1e-5)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_fused_and_unfused_routes_agree(up, demodulate):
    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 4, 8, 8), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    f = setup_filter([1, 3, 3, 1])
    args = dict(demodulate=demodulate, up=up, resample_filter=f, padding=1, flip_weight=up == 1)
    fused = modulated_conv2d(x, weight, styles, fused=True, **args)
    unfused = modulated_conv2d(x, weight, styles, fused=False, **args)
    assert fused.shape == (3, 5, 8 * up, 8 * up)
    assert torch.allclose(fused, unfused, atol=1e-4)


def test_demodulated_output_ignores_style_scale():
    # Demodulation divides out any per-sample scale of the style (eq. 3), so s and 10 s give one image.
    torch.manual_seed(0)
    x, weight, styles = torch.randn(2, 4, 8, 8), torch.randn(5, 4, 3, 3), torch.randn(2, 4)
    a = modulated_conv2d(x, weight, styles, padding=1)
    b = modulated_conv2d(x, weight, styles * 10, padding=1)
    assert torch.allclose(a, b, atol=1e-4)


def test_each_sample_uses_its_own_style():
    torch.manual_seed(0)
    x, weight, styles = torch.randn(2, 4, 8, 8), torch.randn(5, 4, 3, 3), torch.randn(2, 4)
    both = modulated_conv2d(x, weight, styles, padding=1)
    one = modulated_conv2d(x[1:], weight, styles[1:], padding=1)
    assert torch.allclose(both[1:], one, atol=1e-5)


def test_shape_mismatch_fails():
    with pytest.raises(ValueError):
        modulated_conv2d(torch.randn(2, 4, 8, 8), torch.randn(5, 3, 3, 3), torch.randn(2, 4))


@pytest.mark.parametrize("fused", [True, False])
def test_fp16_stays_finite_with_large_styles(fused):
    # Unnormalized, x * s * w would reach ~1e5 here, beyond fp16's 65504; the max-abs pre-scaling that
    # demodulation undoes keeps every intermediate in range. (CPU runs half convs too, slowly.)
    torch.manual_seed(0)
    x, weight, styles = torch.randn(2, 8, 8, 8), torch.randn(4, 8, 3, 3) * 100, torch.randn(2, 8) * 300
    f = setup_filter([1, 3, 3, 1])
    args = dict(padding=1, up=2, resample_filter=f, flip_weight=False, fused=fused)
    ref = modulated_conv2d(x, weight, styles, **args)
    half = modulated_conv2d(x.half(), weight, styles, **args)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    assert (half.float() - ref).abs().max() < 1e-2 * ref.abs().max()


def test_demodulation_from_styles_equals_eq3_on_built_weights():
    torch.manual_seed(0)
    weight, styles = torch.randn(6, 4, 3, 3), torch.randn(5, 4) * 3
    expected = demodulation_coefficients(modulate(weight, styles))
    torch.testing.assert_close(demodulation_coefficients_from_styles(weight, styles), expected)


@pytest.mark.parametrize("up", [1, 2])
def test_shared_weight_route_leaves_the_demodulation_multiply_to_the_caller(up):
    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 4, 8, 8), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    args = dict(up=up, resample_filter=setup_filter([1, 3, 3, 1]), padding=1, flip_weight=up == 1)
    y, d = shared_weight_modconv(x, weight, styles, **args)
    assert d is not None and d.shape == (3, 5)
    expected = modulated_conv2d(x, weight, styles, fused=True, **args)
    torch.testing.assert_close(y * d[:, :, None, None], expected, atol=1e-4, rtol=0)
    _, none = shared_weight_modconv(x, weight, styles, demodulate=False, **args)
    assert none is None
