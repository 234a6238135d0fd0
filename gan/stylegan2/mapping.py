"""Mapping network z (+ embedded label c) -> w, with the running mean w_avg and the truncation trick.

StyleGAN paper, section 2: an MLP maps the normalized z into the intermediate latent space W, which the
synthesis network consumes once per layer (ws [N, num_ws, w_dim]). Truncation (section 5 / appendix B)
pulls w towards w_avg: w' = w_avg + psi (w - w_avg). The same network, with the same parameter paths
(`fc{i}`, `embed`, `w_avg`), serves StyleGAN3 (2 layers, w_avg_beta 0.998) and maps c to the
discriminator's projection vector (z_dim 0, no broadcast, no w_avg).
"""

from __future__ import annotations

import torch
from torch import nn

from gan.config import MappingConfig
from gan.errors import ConfigError
from gan.nn.equalized import FullyConnected


# Pixel norm (ProGAN section 4.2) on the inputs: the MLP sees z, and the embedded c, at unit second moment.
def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# Truncation trick: w' = lerp(w_avg, w, psi) on the first `cutoff` ws (all of them when None).
def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
    if cutoff is None:
        return w_avg.lerp(ws, psi)
    if cutoff < 0:
        raise ConfigError(f"truncation cutoff must be >= 0, got {cutoff}")
    ws = ws.clone()
    ws[:, :cutoff] = w_avg.lerp(ws[:, :cutoff], psi)
    return ws


class MappingNetwork(nn.Module):
    """z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim] (or w [N, w_dim] when num_ws is None)."""

    def __init__(
        self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, config: MappingConfig = MappingConfig()
    ) -> None:
        super().__init__()
        if z_dim == 0 and c_dim == 0:
            raise ConfigError("a mapping network needs z_dim > 0 or c_dim > 0")
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.config = config
        self.num_layers = config.num_layers
        self.w_avg_beta = config.w_avg_beta

        embed_features = (config.embed_features or w_dim) if c_dim > 0 else 0
        layer_features = config.layer_features or w_dim
        features = [z_dim + embed_features] + [layer_features] * (config.num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnected(c_dim, embed_features)
        for idx in range(config.num_layers):
            layer = FullyConnected(
                features[idx],
                features[idx + 1],
                activation=config.activation,
                lr_multiplier=config.lr_multiplier,
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and config.w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))
        else:
            self.w_avg: torch.Tensor | None = None

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        psi: float = 1.0,
        cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """`update_emas` moves w_avg towards this batch's mean w (training only)."""
        x = self._embed_inputs(z, c)  # [N, z_dim + embed_features]
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)  # [N, w_dim] after the last layer

        if update_emas and self.w_avg is not None:
            assert self.w_avg_beta is not None
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, num_ws, w_dim]
        if psi != 1:
            if self.w_avg is None:
                raise ConfigError(
                    "this mapping network tracks no w_avg, so it cannot truncate (psi must be 1)"
                )
            x = truncate(x, self.w_avg, psi, cutoff if self.num_ws is not None else None)
        return x

    def _embed_inputs(self, z: torch.Tensor | None, c: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must be [N, {self.z_dim}], got {None if z is None else list(z.shape)}")
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"c must be [N, {self.c_dim}], got {None if c is None else list(c.shape)}")
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        elif c is not None and c.numel() > 0:
            raise ValueError(f"this network is unconditional (c_dim 0) but got c of shape {list(c.shape)}")
        if len(parts) == 2 and parts[0].shape[0] != parts[1].shape[0]:
            raise ValueError(f"z and c batch sizes differ: {parts[0].shape[0]} vs {parts[1].shape[0]}")
        return torch.cat(parts, dim=1) if len(parts) == 2 else parts[0]

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"
