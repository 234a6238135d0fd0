"""FID, KID and precision/recall against closed forms and invariants."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from gan.errors import ConfigError
from gan.metrics import parse_metric
from gan.metrics.fid import feature_mean_cov, fid_from_features, fid_from_stats
from gan.metrics.kid import kid_from_features
from gan.metrics.precision_recall import precision_recall


def random_spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.5 * np.eye(d)


def closed_form_fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) computed with symmetric eigendecompositions only."""

    def sqrt_spd(m: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    r = sqrt_spd(s1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * sqrt_spd(r @ s2 @ r)))


def test_fid_of_a_set_against_itself_is_zero() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 8)) @ random_spd(8, rng)
    assert abs(fid_from_features(x, x)) < 1e-6


def test_fid_stats_match_the_closed_form() -> None:
    rng = np.random.default_rng(1)
    for d in (1, 3, 10):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = random_spd(d, rng), random_spd(d, rng)
        assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(
            closed_form_fid(mu1, s1, mu2, s2), rel=1e-6, abs=1e-8
        )
    # Commuting (diagonal) covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    want = 3.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid_from_stats(np.zeros(3), np.diag(a), np.ones(3), np.diag(b)) == pytest.approx(want)


def test_fid_of_two_sampled_gaussians_approaches_the_closed_form() -> None:
    rng = np.random.default_rng(2)
    d, n = 4, 200_000
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    s1, s2 = random_spd(d, rng), random_spd(d, rng)
    x = rng.multivariate_normal(mu1, s1, size=n)
    y = rng.multivariate_normal(mu2, s2, size=n)
    # Sampling error of the moments is ~1/sqrt(n); 2% of a value around 1-2 is well above it.
    assert fid_from_features(x, y) == pytest.approx(closed_form_fid(mu1, s1, mu2, s2), rel=0.02)


def test_covariance_is_the_official_biased_one() -> None:
    x = np.random.default_rng(3).standard_normal((50, 3))
    mu, sigma = feature_mean_cov(x)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False, bias=True), atol=1e-12)


def test_fid_uses_scipy_sqrtm() -> None:
    rng = np.random.default_rng(4)
    s1, s2 = random_spd(5, rng), random_spd(5, rng)
    s = scipy.linalg.sqrtm(s2 @ s1)
    assert fid_from_stats(np.zeros(5), s1, np.zeros(5), s2) == pytest.approx(
        float(np.real(np.trace(s1 + s2 - 2 * s)))
    )


def test_kid_is_unbiased() -> None:
    rng = np.random.default_rng(5)
    # Many small draws from one distribution: the estimates scatter around 0, their mean is 0 within
    # its standard error (a biased estimator such as FID would sit clearly above 0 here).
    estimates = [
        kid_from_features(rng.standard_normal((40, 8)), rng.standard_normal((40, 8)), num_subsets=1, rng=rng)
        for _ in range(300)
    ]
    mean, sem = np.mean(estimates), np.std(estimates) / np.sqrt(len(estimates))
    assert abs(mean) < 3 * sem
    assert min(estimates) < 0 < max(estimates)
    # A real difference is detected far beyond that noise.
    shifted = kid_from_features(rng.standard_normal((200, 8)), rng.standard_normal((200, 8)) + 0.5, rng=rng)
    assert shifted > 20 * np.std(estimates) / np.sqrt(40)


def test_kid_matches_the_mmd_definition_for_one_full_subset() -> None:
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((30, 5)), rng.standard_normal((30, 5)) + 0.3
    k = lambda a, b: (a @ b.T / 5 + 1) ** 3  # noqa: E731
    m = 30
    kxx, kyy, kxy = k(y, y), k(x, x), k(y, x)
    want = (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.mean()
    )
    assert kid_from_features(x, y, num_subsets=1, max_subset_size=30) == pytest.approx(want)


def test_precision_recall() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 4))
    assert precision_recall(x, x) == (1.0, 1.0)
    far = x + 100
    assert precision_recall(x, far) == (0.0, 0.0)
    # Generated samples collapsed onto a small region of the real data: precise, poor recall.
    collapsed = x[np.linalg.norm(x, axis=1) < 0.8]
    p, r = precision_recall(x, collapsed)
    assert p > 0.95 and r < 0.5


def test_metric_names() -> None:
    fid = parse_metric("fid50k_full")
    assert (fid.kind, fid.num_gen, fid.max_real) == ("fid", 50_000, None)
    kid = parse_metric("kid50k_full")
    assert (kid.kind, kid.num_gen, kid.max_real, kid.num_subsets, kid.max_subset_size) == (
        "kid",
        50_000,
        1_000_000,
        100,
        1000,
    )
    pr = parse_metric("pr50k3_full")
    assert (pr.kind, pr.num_gen, pr.max_real, pr.nhood_size) == ("pr", 50_000, 200_000, 3)
    assert parse_metric("fid10k").max_real == 10_000
    for bad in ("fid", "fid50k_half", "is50k", "ppl2_wend", "pr50k"):
        with pytest.raises(ConfigError):
            parse_metric(bad)
