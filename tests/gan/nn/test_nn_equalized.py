"""Equalized learning rate: stored weights are N(0, 1) / lr, the run-time scale makes them unit-gain."""

import math

import torch
import torch.nn.functional as F

from gan.nn.equalized import Conv2d, FullyConnected


def test_fully_connected_scales_weight_and_bias_at_run_time():
    torch.manual_seed(0)
    fc = FullyConnected(16, 8, lr_multiplier=0.01, bias_init=0.5)
    # Stored values are large (N(0,1)/lr); the effective parameters are lr/sqrt(fan_in) and lr times them.
    assert 50 < fc.weight.std().item() < 200
    assert torch.allclose(fc.bias * 0.01, torch.full([8], 0.5))
    x = torch.randn(4, 16)
    expected = x @ (fc.weight * 0.01 / math.sqrt(16)).t() + fc.bias * 0.01
    assert torch.allclose(fc(x), expected, atol=1e-5)


def test_fully_connected_keeps_unit_variance_at_init():
    torch.manual_seed(0)
    fc = FullyConnected(512, 512, lr_multiplier=0.01)
    y = fc(torch.randn(256, 512))
    assert abs(y.var().item() - 1.0) < 0.1


def test_fully_connected_activation_and_init():
    fc = FullyConnected(4, 3, activation="lrelu", weight_init=0, bias_init=[1.0, -1.0, 2.0])
    y = fc(torch.randn(2, 4))
    expected = torch.tensor([1.0, -0.2, 2.0]) * math.sqrt(2)
    assert torch.allclose(y, expected.expand(2, 3))
    assert FullyConnected(4, 3, bias=False).bias is None


def test_conv2d_is_scaled_conv_with_bias_gain_and_clamp():
    torch.manual_seed(0)
    conv = Conv2d(3, 5, kernel_size=3, activation="lrelu", conv_clamp=0.5)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 3, 8, 8)
    pre = F.conv2d(x, conv.weight / math.sqrt(3 * 9), conv.bias, padding=1)
    expected = (F.leaky_relu(pre, 0.2) * math.sqrt(2) * 0.5).clamp(-0.25, 0.25)
    assert torch.allclose(conv(x, gain=0.5), expected, atol=1e-5)


def test_conv2d_resampling_shapes_and_buffers():
    up = Conv2d(4, 4, 3, up=2)
    down = Conv2d(4, 4, 3, down=2)
    x = torch.randn(1, 4, 8, 8)
    assert up(x).shape == (1, 4, 16, 16)
    assert down(x).shape == (1, 4, 4, 4)
    assert set(dict(down.named_buffers())) == {"resample_filter"}
    assert set(dict(down.named_parameters())) == {"weight", "bias"}
