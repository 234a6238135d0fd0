"""The fast `filtered_lrelu` against its plain definition, on the filters StyleGAN3 designs.

Tolerance: max abs difference <= 1e-5 x the output's max abs value (at least 1). The fast path sums in
another order and moves the gain past the clamp (gain * clamp(v, c / gain) for clamp(gain * v, c)), both
float32 rounding (~1e-7 relative); a wrong offset, gain or clamp differs by the order of the output.
"""

import itertools

import pytest
import torch

from gan.stylegan3.filtered_lrelu import filtered_lrelu, filtered_lrelu_reference
from gan.stylegan3.filters_design import design_lowpass_filter


def assert_close(fast: torch.Tensor, ref: torch.Tensor) -> None:
    assert fast.shape == ref.shape
    scale = max(1.0, ref.abs().max().item())
    diff = (fast - ref).abs().max().item()
    assert diff <= 1e-5 * scale, f"max abs diff {diff:.3g} at output scale {scale:.3g}"


def layer_filters(up: int, down: int, radial: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    # As a StyleGAN3 layer designs them: 6 taps per sample of the lower rate, Kaiser (radial: jinc) low-pass.
    rate = 32 * max(up, down)
    up_f = design_lowpass_filter(6 * up, 10, 8, rate) if up > 1 else None
    down_f = design_lowpass_filter(6 * down, 9, 7, rate, radial=radial) if down > 1 else None
    return up_f, down_f


CASES = list(
    itertools.product(
        [(2, 2), (4, 2), (2, 4), (2, 1), (1, 2)],  # up, down
        [False, True],  # radial downsampling filter
        [None, 1.5],  # clamp (in units of the output)
        [(2**0.5, 0.2), (1.0, 1.0), (3.0, 0.1)],  # gain, slope
    )
)


@pytest.mark.parametrize("factors,radial,clamp,gain_slope", CASES)
def test_fast_matches_reference(factors, radial, clamp, gain_slope):
    up, down = factors
    gain, slope = gain_slope
    up_f, down_f = layer_filters(up, down, radial)
    torch.manual_seed(up * 10 + down)
    x = torch.randn(2, 5, 16, 15) * 2
    bias = torch.randn(5)
    taps_up = 1 if up_f is None else up_f.shape[0]
    padding = (taps_up - 2, taps_up - 1, taps_up - 1, -1)  # uneven, one side cropping
    args = dict(up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp)
    ref = filtered_lrelu_reference(x, up_f, down_f, bias, **args)
    assert_close(filtered_lrelu(x, up_f, down_f, bias, **args), ref)
    assert_close(
        filtered_lrelu(x, up_f, down_f, None, **args), filtered_lrelu_reference(x, up_f, down_f, None, **args)
    )
    if clamp is not None:  # the clamp is active in this case, so the comparison covers it
        unclamped = filtered_lrelu_reference(x, up_f, down_f, bias, **{**args, "clamp": None})
        assert (unclamped - ref).abs().max().item() > 1e-3  # 100x the tolerance


def test_input_is_left_untouched_and_layout_kept():
    # The nonlinearity runs in place; that must never reach the caller's tensor, even without filters.
    x = torch.randn(1, 3, 8, 8)
    before = x.clone()
    for padding in [(0, 0, 0, 0), (-1, 0, -2, -1)]:  # no copy, and a crop (a view of x)
        args = dict(padding=padding, gain=2.0, slope=0.2, clamp=1.0)
        y = filtered_lrelu(x, None, None, None, **args)
        assert torch.equal(x, before)
        assert torch.allclose(y, filtered_lrelu_reference(x, None, None, None, **args))
    up_f, down_f = layer_filters(2, 2, False)
    x_cl = torch.randn(1, 4, 10, 10).contiguous(memory_format=torch.channels_last)
    y_cl = filtered_lrelu(x_cl, up_f, down_f, None, up=2, down=2, padding=(10, 10, 10, 10))
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    assert filtered_lrelu(
        x_cl.contiguous(), up_f, down_f, None, up=2, down=2, padding=(10, 10, 10, 10)
    ).is_contiguous()


@pytest.mark.parametrize("radial", [False, True])
def test_gradients_match_reference(radial):
    # StyleGAN3 trains through this op: the in-place lrelu and clamp must keep autograd's result exact.
    up_f, down_f = layer_filters(2, 2, radial)
    torch.manual_seed(1)
    x0 = (torch.randn(2, 3, 9, 9) * 2).double()
    b0 = torch.randn(3).double()
    args = dict(up=2, down=2, padding=(10, 11, 10, 11), gain=2**0.5, slope=0.2, clamp=1.0)

    def grads(fn):
        x, b = x0.clone().requires_grad_(), b0.clone().requires_grad_()
        y = fn(x, up_f, down_f, b, **args)
        (y * torch.sin(y)).sum().backward()
        return y, x.grad, b.grad

    for fast, ref in zip(grads(filtered_lrelu), grads(filtered_lrelu_reference), strict=True):
        assert torch.allclose(fast, ref, atol=1e-10)
