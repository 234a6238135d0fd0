"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").

The squared MMD between the feature sets under the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,
with the unbiased estimator (diagonal terms left out), averaged over `num_subsets` random subsets of
`max_subset_size` items as in the official code. Unbiased: its expectation is 0 when both sets come from
the same distribution, so small sets give noisy but not inflated values (unlike FID).
"""

from __future__ import annotations

import numpy as np


def kid_from_features(
    real: np.ndarray,
    gen: np.ndarray,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    rng: np.random.Generator | None = None,
) -> float:
    real = np.asarray(real, dtype=np.float64)
    gen = np.asarray(gen, dtype=np.float64)
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise ValueError(
            f"need two feature sets [N, D] of the same D, got {list(real.shape)} and {list(gen.shape)}"
        )
    rng = rng if rng is not None else np.random.default_rng(0)
    n = real.shape[1]
    m = min(real.shape[0], gen.shape[0], max_subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 items in each set")
    t = 0.0
    for _ in range(num_subsets):
        x = gen[rng.choice(gen.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)
