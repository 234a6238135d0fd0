"""bias_act: the official gains, slopes and clamping."""

import math

import pytest
import torch

from gan.nn.bias_act import bias_act


def test_lrelu_default_slope_and_gain():
    x = torch.tensor([[-2.0, 0.5], [1.0, -1.0]])
    b = torch.tensor([0.5, -1.0])
    y = bias_act(x, b, act="lrelu")
    pre = x + b
    expected = torch.where(pre >= 0, pre, 0.2 * pre) * math.sqrt(2)
    assert torch.allclose(y, expected)


def test_lrelu_gain_keeps_unit_second_moment():
    # The sqrt(2) gain is chosen so that E[y^2] = E[x^2] for x ~ N(0, 1) up to the 0.2 slope's share:
    # E[lrelu(x)^2] = (1 + 0.04) / 2, so E[y^2] = 1.04.
    x = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0))
    y = bias_act(x, act="lrelu")
    assert abs(y.square().mean().item() - 1.04) < 0.01


@pytest.mark.parametrize(
    "act,gain", [("linear", 1.0), ("relu", math.sqrt(2)), ("tanh", 1.0), ("swish", math.sqrt(2))]
)
def test_default_gains(act, gain):
    x = torch.tensor([0.7])
    y = bias_act(x, act=act)
    base = {"linear": x, "relu": x, "tanh": torch.tanh(x), "swish": torch.sigmoid(x) * x}[act]
    assert torch.allclose(y, base * gain)


def test_explicit_gain_and_clamp_apply_after_activation():
    x = torch.tensor([-100.0, -1.0, 1.0, 100.0])
    y = bias_act(x, act="lrelu", gain=2.0, clamp=10.0)
    assert torch.allclose(y, torch.tensor([-10.0, -0.4, 2.0, 10.0]))


def test_bias_along_other_dim():
    x = torch.zeros(2, 3, 4)
    b = torch.arange(4.0)
    y = bias_act(x, b, dim=2)
    assert torch.equal(y[1, 2], b)


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError):
        bias_act(torch.zeros(2, 3), torch.zeros(4))
    with pytest.raises(ValueError):
        bias_act(torch.zeros(2, 3), act="gelu")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        bias_act(torch.zeros(2, 3), clamp=-1)


@pytest.mark.parametrize("act", ["lrelu", "tanh", "linear"])
def test_inplace_gives_the_same_values_and_spares_tensors_autograd_needs(act):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    expected = bias_act(x, act=act, gain=1.7, clamp=0.9)
    with torch.no_grad():
        mine = x.clone()
        torch.testing.assert_close(bias_act(mine, act=act, gain=1.7, clamp=0.9, inplace=True), expected)
    leaf = x.clone().requires_grad_(True)
    y = bias_act(leaf * 1, act=act, gain=1.7, inplace=True)  # grad on: no in-place step may run
    y.sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
