"""Exponential moving average of the generator weights (Karras et al. 2018, Sec. 4.1; StyleGAN2-ADA App. D).

The decay is given as a half-life in images, `ema_kimg`, so it does not depend on the batch size:
beta = 0.5 ** (batch / ema_nimg). With a ramp-up the half-life is at most `ema_rampup` x the images seen,
so the average forgets the random initial weights quickly early in training.
"""

from __future__ import annotations

import torch
from torch import nn


def ema_beta(cur_nimg: int, batch_size: int, ema_kimg: float, ema_rampup: float | None) -> float:
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return float(0.5 ** (batch_size / max(ema_nimg, 1e-8)))


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G for parameters; buffers (w_avg, noise, magnitude EMA) copied.

    Parameters and buffers are paired by name, and a missing or extra one is an error: a silent zip over
    mismatched lists would average unrelated tensors.
    """
    params = dict(G.named_parameters())
    ema_params = dict(G_ema.named_parameters())
    if params.keys() != ema_params.keys():
        raise ValueError("G and G_ema have different parameters")
    for name, p_ema in ema_params.items():
        p_ema.copy_(params[name].detach().lerp(p_ema, beta))
    buffers = dict(G.named_buffers())
    ema_buffers = dict(G_ema.named_buffers())
    if buffers.keys() != ema_buffers.keys():
        raise ValueError("G and G_ema have different buffers")
    for name, b_ema in ema_buffers.items():
        b_ema.copy_(buffers[name])
