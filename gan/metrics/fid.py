"""Fréchet Inception Distance (Heusel et al. 2017, "GANs trained by a two time-scale update rule").

FID = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_g S_r)^(1/2)): the Fréchet distance between Gaussians fitted
to the two feature sets. As the official code (and the original TTUR code) we take the matrix square root
with `scipy.linalg.sqrtm` and keep the real part: S_g S_r is not symmetric, and rounding gives its root
tiny imaginary parts that carry no meaning.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg


def feature_mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (biased, 1/N, as official) covariance of features [N, D], in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, D], got {list(x.shape)}")
    mu = x.mean(axis=0)
    sigma = x.T @ x / x.shape[0] - np.outer(mu, mu)
    return mu, sigma


def fid_from_stats(
    mu_real: np.ndarray, sigma_real: np.ndarray, mu_gen: np.ndarray, sigma_gen: np.ndarray
) -> float:
    m = np.square(mu_gen - mu_real).sum()
    # Without `disp`, which SciPy deprecates in 1.17: the official call's error estimate was unused.
    s = scipy.linalg.sqrtm(np.dot(sigma_gen, sigma_real))
    return float(np.real(m + np.trace(sigma_gen + sigma_real - s * 2)))


def fid_from_features(real: np.ndarray, gen: np.ndarray) -> float:
    return fid_from_stats(*feature_mean_cov(real), *feature_mean_cov(gen))
