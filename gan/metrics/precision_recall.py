"""Improved precision and recall (Kynkäänniemi et al. 2019).

Each set's manifold is the union of balls around its features, of radius the distance to the k-th
nearest neighbour (k = `nhood_size`, 3 in `pr50k3`). Precision: the share of generated features inside
the real manifold; recall: the share of real features inside the generated one. The official code runs
this on VGG16 features; any detector works.
"""

from __future__ import annotations

import numpy as np
import torch


def _kth_radii(manifold: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    radii = []
    for rows in manifold.split(batch):
        d = torch.cdist(rows, manifold)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # +1: each point is its own nearest neighbour
    return torch.cat(radii)


def _coverage(manifold: torch.Tensor, radii: torch.Tensor, probes: torch.Tensor, batch: int) -> float:
    inside = [(torch.cdist(rows, manifold) <= radii).any(dim=1) for rows in probes.split(batch)]
    return float(torch.cat(inside).float().mean())


def precision_recall(
    real: np.ndarray, gen: np.ndarray, nhood_size: int = 3, batch: int = 10000
) -> tuple[float, float]:
    r = torch.as_tensor(np.asarray(real), dtype=torch.float32)
    g = torch.as_tensor(np.asarray(gen), dtype=torch.float32)
    if min(r.shape[0], g.shape[0]) <= nhood_size:
        raise ValueError(f"precision/recall with k={nhood_size} needs more than {nhood_size} items per set")
    precision = _coverage(r, _kth_radii(r, nhood_size, batch), g, batch)
    recall = _coverage(g, _kth_radii(g, nhood_size, batch), r, batch)
    return precision, recall
