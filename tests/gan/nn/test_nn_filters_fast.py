"""The fast `upfirdn2d` (strided and transposed convolutions, separable passes) against the plain
zero-stuff / pad / convolve / discard definition, over many shapes, factors, paddings, gains and flips.

Tolerance: max abs difference <= 1e-5 x the output's max abs value (at least 1). The two differ only in
summation order (float32 rounding of sums of up to ~100 products is ~1e-6 relative); a wrong offset,
flip or stride gives differences of the order of the output itself.
"""

import random

import pytest
import torch
import torch.nn.functional as F

from gan.nn.conv2d_resample import conv2d_resample, conv2d_resample_ref, conv_transpose_by_phases
from gan.nn.filters import setup_filter, upfirdn2d, upfirdn2d_reference


def assert_close(fast: torch.Tensor, ref: torch.Tensor) -> None:
    assert fast.shape == ref.shape
    scale = max(1.0, ref.abs().max().item())
    diff = (fast - ref).abs().max().item()
    assert diff <= 1e-5 * scale, f"max abs diff {diff:.3g} at output scale {scale:.3g}"


def random_case(rng: random.Random) -> dict:
    """One upfirdn2d call: filter 1-D (separable) or 2-D, factors 1-4 per axis, padding -2 .. taps+2."""
    separable = rng.random() < 0.5
    taps_y = rng.randint(1, 12)
    taps_x = taps_y if separable else rng.randint(1, 12)
    f = torch.randn(taps_y) if separable else torch.randn(taps_y, taps_x)
    pad = [rng.randint(-2, taps_x + 2), rng.randint(-2, taps_x + 2)]
    pad += [rng.randint(-2, taps_y + 2), rng.randint(-2, taps_y + 2)]
    return dict(
        f=f,
        up=(rng.randint(1, 4), rng.randint(1, 4)),
        down=(rng.randint(1, 4), rng.randint(1, 4)),
        padding=pad,
        flip_filter=rng.random() < 0.5,
        gain=rng.choice([1.0, 4.0, 0.3]),
    )


def reference_or_none(x: torch.Tensor, case: dict) -> torch.Tensor | None:
    """The reference result, or None where the padding crops away the whole image (no output)."""
    try:
        return upfirdn2d_reference(x, **case)
    except RuntimeError:
        return None


@pytest.mark.parametrize("seed", range(8))
def test_fast_upfirdn2d_matches_reference_on_random_cases(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    checked = 0
    for _ in range(40):
        case = random_case(rng)
        x = torch.randn(2, 3, rng.randint(1, 11), rng.randint(1, 11))
        ref = reference_or_none(x, case)
        if ref is None or ref.numel() == 0:
            continue
        assert_close(upfirdn2d(x, **case), ref)
        checked += 1
    assert checked >= 20  # the random cases are mostly valid ones


@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 3, 4, 5, 4, 3, 2, 1, 0.5, 0.25, 0.1]])
@pytest.mark.parametrize("up,down", [(2, 1), (1, 2), (4, 1), (1, 4), (2, 2)])
def test_the_networks_cases_match_reference(taps, up, down):
    # StyleGAN2's [1, 3, 3, 1] (a 2-D 4x4 filter after setup_filter) and a 12-tap separable filter as
    # StyleGAN3 designs for 2x resampling, with the 'same'-style padding the networks use.
    f = setup_filter(taps)
    x = torch.randn(2, 8, 16, 16)
    t = len(taps)
    pad = [(t + up - 1) // 2 + (t - down + 1) // 2, (t - up) // 2 + (t - down) // 2] * 2  # x0, x1, y0, y1
    assert_close(upfirdn2d(x, f, up=up, down=down, padding=pad), upfirdn2d_reference(x, f, up, down, pad))


def test_layouts_and_dtypes_are_kept():
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 5, 9, 9, dtype=torch.float64)
    ref = upfirdn2d_reference(x, f, up=2, padding=2)
    plain = upfirdn2d(x, f, up=2, padding=2)
    channels_last = upfirdn2d(x.contiguous(memory_format=torch.channels_last), f, up=2, padding=2)
    assert plain.dtype == torch.float64 and plain.is_contiguous()
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(plain, ref, atol=1e-12) and torch.allclose(channels_last, ref, atol=1e-12)
    strided = x[:, :, ::2, :]  # neither layout: accepted, returned contiguous
    assert torch.allclose(upfirdn2d(strided, f, down=2), upfirdn2d_reference(strided, f, down=2), atol=1e-12)


@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 3, 4, 5, 4, 3, 2, 1]])
@pytest.mark.parametrize("up,down", [(2, 1), (1, 2), (3, 2)])
def test_gradients_match_reference_to_second_order(taps, up, down):
    # Training differentiates through the filters, twice for the R1 penalty (gradient of a gradient norm).
    f = setup_filter(taps)
    x = torch.randn(1, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    pad = [2, 1, 1, 3]

    def grads(fn):
        y = fn(x, f, up=up, down=down, padding=pad, gain=1.7)
        (g,) = torch.autograd.grad((y * torch.cos(y)).sum(), x, create_graph=True)
        (gg,) = torch.autograd.grad(g.square().sum(), x)
        return y, g, gg

    for fast, ref in zip(grads(upfirdn2d), grads(upfirdn2d_reference), strict=True):
        assert torch.allclose(fast, ref, atol=1e-10)


def test_conv2d_resample_matches_reference_with_stylegan3_sized_filter():
    # The resampled convolution routes through the fast upfirdn2d; its reference through the plain one.
    torch.manual_seed(3)
    x, w = torch.randn(2, 6, 10, 10), torch.randn(4, 6, 3, 3)
    f = setup_filter([1, 2, 3, 4, 5, 4, 3, 2, 1])
    for up, down in [(2, 1), (1, 2)]:
        fast = conv2d_resample(x, w, f, up=up, down=down, padding=1)
        assert_close(fast, conv2d_resample_ref(x, w, f, up=up, down=down, padding=1))


@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("up", [2, 3, 4])
@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_conv_by_phases_is_the_transposed_conv_then_zeros(k, up, groups):
    torch.manual_seed(k * up)
    x = torch.randn(2, 3 * groups, 5, 6, dtype=torch.float64)
    w = torch.randn(4 * groups, 3, k, k + 1, dtype=torch.float64)  # true-convolution taps, uneven
    # conv_transpose2d's weight layout: [groups * I, O / groups, kh, kw].
    w_t = w.reshape(groups, 4, 3, k, k + 1).transpose(1, 2).reshape(groups * 3, 4, k, k + 1)
    expected = F.conv_transpose2d(x, w_t, stride=up, groups=groups)
    y = conv_transpose_by_phases(x, w, up, groups)
    h, wd = expected.shape[2:]
    assert y.shape[2] >= h and y.shape[3] >= wd
    assert torch.allclose(y[:, :, :h, :wd], expected, atol=1e-12)
    assert y[:, :, h:].abs().sum() == 0 and y[:, :, :, wd:].abs().sum() == 0


@pytest.mark.parametrize("up,down", [(2, 1), (1, 2)])
def test_conv2d_resample_gradients_match_reference(up, down):
    # Training differentiates the resampled convolutions with respect to input and weights.
    torch.manual_seed(4)
    f = setup_filter([1, 3, 3, 1])
    x0, w0 = torch.randn(2, 4, 6, 6, dtype=torch.float64), torch.randn(6, 2, 3, 3, dtype=torch.float64)

    def grads(fn):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        y = fn(x, w, f, up=up, down=down, padding=1, groups=2, flip_weight=up == 1)
        (y * torch.cos(y)).sum().backward()
        return y, x.grad, w.grad

    for fast, ref in zip(grads(conv2d_resample), grads(conv2d_resample_ref), strict=True):
        assert torch.allclose(fast, ref, atol=1e-10)
