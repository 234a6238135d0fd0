"""FIR filtering and resampled convolution against independent references (scipy, plain conv2d)."""

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from gan.nn.conv2d_resample import conv2d_resample, conv2d_resample_ref
from gan.nn.filters import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d


def test_setup_filter_is_normalized_outer_product():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4)
    assert torch.allclose(f.sum(), torch.tensor(1.0))
    assert torch.allclose(f, torch.outer(f[0], f[0]) / f[0].sum() ** 2 * f.sum())
    assert setup_filter(list(range(1, 9))).ndim == 1  # 8 taps or more stay separable


def test_upfirdn2d_full_padding_is_scipy_convolution():
    # An asymmetric filter catches a flipped kernel; full padding makes scipy's 'full' mode the reference.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    f = rng.standard_normal((3, 4)).astype(np.float32)
    y = upfirdn2d(torch.from_numpy(x), torch.from_numpy(f), padding=[3, 3, 2, 2])
    expected = np.stack([[scipy.signal.convolve2d(xc, f, mode="full") for xc in xn] for xn in x])
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2), (3, 2)])
def test_upfirdn2d_separable_matches_scipy_upfirdn(up, down):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 6, 5)).astype(np.float32)
    taps = rng.standard_normal(5).astype(np.float32)
    f = torch.from_numpy(taps)  # 1-D: applied along x, then y
    p = len(taps) - 1
    # scipy.signal.upfirdn upsamples, convolves fully and downsamples along one axis; its output length
    # for the full convolution is ceil(((n - 1) * up + taps) / down).
    y = upfirdn2d(torch.from_numpy(x), f, up=up, down=down, padding=[p, p + up - 1, p, p + up - 1])
    ref = scipy.signal.upfirdn(taps, x, up=up, down=down, axis=3)
    ref = scipy.signal.upfirdn(taps, ref, up=up, down=down, axis=2)
    h, w = min(y.shape[2], ref.shape[2]), min(y.shape[3], ref.shape[3])
    np.testing.assert_allclose(y.numpy()[:, :, :h, :w], ref[:, :, :h, :w], atol=1e-5)


def test_separable_and_2d_filters_agree():
    x = torch.randn(2, 3, 8, 8)
    taps = [1.0, 2.0, 5.0, 1.0]
    f1 = setup_filter(taps, separable=True)
    f2 = setup_filter(taps, separable=False)
    assert torch.allclose(upfirdn2d(x, f1, up=2, padding=2), upfirdn2d(x, f2, up=2, padding=2), atol=1e-6)


def test_resampling_keeps_constant_images_constant_and_sizes_exact():
    f = setup_filter([1, 3, 3, 1])
    x = torch.full([1, 2, 8, 8], 3.0)
    up = upsample2d(x, f)
    down = downsample2d(x, f)
    same = filter2d(x, f)
    assert up.shape[-2:] == (16, 16) and down.shape[-2:] == (4, 4) and same.shape[-2:] == (8, 8)
    # Unit DC gain: away from the zero-padded border the value is unchanged.
    assert torch.allclose(up[..., 3:-3, 3:-3], torch.tensor(3.0), atol=1e-6)
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.tensor(3.0), atol=1e-6)
    assert torch.allclose(same[..., 2:-2, 2:-2], torch.tensor(3.0), atol=1e-6)


def test_downsample_then_upsample_of_smooth_image_is_close():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    x = torch.sin(2 * xx + yy)[None, None]
    f = setup_filter([1, 3, 3, 1])
    back = upsample2d(downsample2d(x, f), f)
    assert (back - x)[..., 4:-4, 4:-4].abs().max() < 0.02


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("flip_weight", [True, False])
def test_conv2d_resample_fast_paths_match_reference(k, up, down, groups, flip_weight):
    torch.manual_seed(0)
    x = torch.randn(2, 4 * groups, 8, 8, dtype=torch.float64)
    w = torch.randn(6 * groups, 4, k, k, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1])  # float32 by contract; upfirdn2d casts it to x.dtype
    args = dict(f=f, up=up, down=down, padding=k // 2, groups=groups, flip_weight=flip_weight)
    fast = conv2d_resample(x, w, **args)
    ref = conv2d_resample_ref(x, w, **args)
    assert fast.shape == (2, 6 * groups, 8 * up // down, 8 * up // down)
    assert torch.allclose(fast, ref, atol=1e-10)


def test_conv2d_resample_without_resampling_is_conv2d():
    x, w = torch.randn(2, 3, 8, 8), torch.randn(5, 3, 3, 3)
    assert torch.allclose(conv2d_resample(x, w, padding=1), F.conv2d(x, w, padding=1), atol=1e-6)
    flipped = conv2d_resample(x, w, padding=1, flip_weight=False)
    assert torch.allclose(flipped, F.conv2d(x, w.flip([2, 3]), padding=1), atol=1e-6)
