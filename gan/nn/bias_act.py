"""Bias, activation, gain and clamp in one call.

The gains keep the activations at unit variance through the network (StyleGAN2 paper, appendix B;
the "He" gain sqrt(2) for rectifiers). The clamp bounds conv outputs so that fp16 cannot overflow; it is
applied in fp32 as well, so that an fp16-trained network gives the same image on CPU.

This is the plain reference; a fused kernel can later replace `bias_act` behind the same signature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gan.config import Activation


@dataclass(frozen=True)
class ActivationSpec:
    func: Callable[[torch.Tensor, float], torch.Tensor]
    default_alpha: float
    default_gain: float


ACTIVATIONS: dict[str, ActivationSpec] = {
    "linear": ActivationSpec(lambda x, a: x, 0.0, 1.0),
    "relu": ActivationSpec(lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": ActivationSpec(lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": ActivationSpec(lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": ActivationSpec(lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": ActivationSpec(lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": ActivationSpec(lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": ActivationSpec(lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": ActivationSpec(lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def default_gain(act: Activation) -> float:
    """The gain that keeps unit variance after `act` (sqrt(2) for the rectifiers, 1 otherwise)."""
    return _spec(act).default_gain


def _spec(act: str) -> ActivationSpec:
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[act]


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    act: Activation = "linear",
    gain: float | None = None,
    clamp: float | None = None,
    alpha: float | None = None,
    dim: int = 1,
    inplace: bool = False,
) -> torch.Tensor:
    """y = clamp(act(x + b) * gain, -clamp, clamp), with `b` broadcast along `dim`.

    `gain=None` takes the activation's default gain, `alpha=None` its default slope (0.2 for lrelu).
    `inplace=True` lets it overwrite x (a temporary of the caller's) when autograd is off, saving a
    pass over memory per step.
    """
    spec = _spec(act)
    if clamp is not None and clamp < 0:
        raise ValueError(f"clamp must be >= 0 or None, got {clamp}")
    owned = inplace and not torch.is_grad_enabled()  # whether x may be overwritten from here on
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {list(b.shape)} does not match dim {dim} of {list(x.shape)}")
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
        owned = not torch.is_grad_enabled()
    slope = spec.default_alpha if alpha is None else float(alpha)
    if act == "lrelu" and owned:
        x = F.leaky_relu_(x, slope)
    else:
        y = spec.func(x, slope)
        owned = owned or (y is not x and not torch.is_grad_enabled())
        x = y
    gain = spec.default_gain if gain is None else float(gain)
    if gain != 1:
        x = x.mul_(gain) if owned else x * gain
        owned = not torch.is_grad_enabled()
    if clamp is not None:
        x = x.clamp_(-clamp, clamp) if owned else x.clamp(-clamp, clamp)
    return x
