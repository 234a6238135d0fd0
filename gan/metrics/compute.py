"""`compute_metrics`: the official metric names (fid50k_full, kid50k_full, pr50k3_full, ...) over a
generator and a dataset.

A name says what to compute and how many items: `fid50k_full` compares 50k generated images with the
whole dataset (no x-flip), `fid50k` with at most 50k real images; `kid50k_full` uses at most 1M real
images in 100 subsets of 1000; `pr50k3_full` uses at most 200k real images and k = 3 neighbours (the
official `metric_main.py` counts). `num_gen` and `max_real` override the counts, so tests and quick
checks can run the same code on a few dozen images; values from fewer images are biased (FID upwards).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from gan.errors import ConfigError
from gan.metrics.detector import INCEPTION_URL, FeatureDetector, load_detector
from gan.metrics.features import ImageSet, ProgressFn, dataset_features, generator_features
from gan.metrics.fid import fid_from_features
from gan.metrics.kid import kid_from_features
from gan.metrics.precision_recall import precision_recall
from gan.training.dataset import ImageDataset
from gan.vocabulary import METRIC_NAME, check_metric_name


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Literal["fid", "kid", "pr"]
    num_gen: int
    max_real: int | None  # None = the whole dataset
    nhood_size: int = 3
    num_subsets: int = 100
    max_subset_size: int = 1000


def parse_metric(name: str) -> MetricSpec:
    m = METRIC_NAME.match(check_metric_name(name))
    assert m is not None  # check_metric_name matched it
    if m.group(1):
        kind: Literal["fid", "kid", "pr"] = m.group(1)  # type: ignore[assignment]
        num_gen, full = int(m.group(2)) * 1000, m.group(3) is not None
        if kind == "fid":
            return MetricSpec(name, "fid", num_gen, None if full else num_gen)
        return MetricSpec(name, "kid", num_gen, 1_000_000 if full else num_gen)
    num_gen, k, full = int(m.group(4)) * 1000, int(m.group(5)), m.group(6) is not None
    if k < 1:
        raise ConfigError(f"{name}: the neighbourhood size must be >= 1")
    return MetricSpec(name, "pr", num_gen, 200_000 if full else num_gen, nhood_size=k)


def _generator(G: Any) -> Any:
    """Accept a Generator or anything holding one as `.G` (gan.sampling.Sampler)."""
    inner = getattr(G, "G", None)
    return inner if isinstance(inner, torch.nn.Module) else G


def compute_metrics(
    metrics: list[str] | tuple[str, ...] | str,
    G: Any,
    data: ImageSet | Path | str,
    detector: FeatureDetector | Path | str | None = None,
    *,
    pr_detector: FeatureDetector | Path | str | None = None,
    num_gen: int | None = None,
    max_real: int | None = None,
    device: str | torch.device = "cpu",
    batch: int = 64,
    seed: int = 0,
    detector_sha256: str | None = None,
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, float]:
    """Values by official result name (`fid50k_full`, `pr50k3_full_precision`, ...).

    `detector` is the Inception file (path, URL, or a loaded `FeatureDetector`; default: the official
    URL, through the cache); `pr_detector` defaults to it (officially precision/recall use VGG16).
    Features of the same item counts are computed once and shared between metrics.
    """
    names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
    specs = [parse_metric(n) for n in names if n]
    if not specs:
        raise ConfigError("no metrics given")
    for value, what in ((num_gen, "num_gen"), (max_real, "max_real")):
        if value is not None and value < 2:
            raise ConfigError(f"{what} must be >= 2, got {value}")
    G = _generator(G)
    if isinstance(data, str | Path):
        data = ImageDataset(data, use_labels=int(G.c_dim) > 0)

    def load(d: FeatureDetector | Path | str | None) -> FeatureDetector:
        if isinstance(d, FeatureDetector):
            return d.to(device)
        return load_detector(d or INCEPTION_URL, sha256=detector_sha256, cache_dir=cache_dir, device=device)

    main = load(detector)
    pr = main if pr_detector is None else load(pr_detector)
    real_cache: dict[tuple[int, int | None], np.ndarray] = {}
    gen_cache: dict[tuple[int, int], np.ndarray] = {}

    def real(det: FeatureDetector, n: int | None) -> np.ndarray:
        key = (id(det), n)
        if key not in real_cache:
            real_cache[key] = dataset_features(data, det, n, batch, device, progress)
        return real_cache[key]

    def fake(det: FeatureDetector, n: int) -> np.ndarray:
        key = (id(det), n)
        if key not in gen_cache:
            gen_cache[key] = generator_features(G, det, n, batch, device, data, seed, progress)
        return gen_cache[key]

    results: dict[str, float] = {}
    for spec in specs:
        n_gen = num_gen if num_gen is not None else spec.num_gen
        n_real = max_real if max_real is not None else spec.max_real
        if spec.kind == "fid":
            results[spec.name] = fid_from_features(real(main, n_real), fake(main, n_gen))
        elif spec.kind == "kid":
            results[spec.name] = kid_from_features(
                real(main, n_real), fake(main, n_gen), spec.num_subsets, spec.max_subset_size,
                np.random.default_rng(seed),
            )  # fmt: skip
        else:
            p, r = precision_recall(real(pr, n_real), fake(pr, n_gen), spec.nhood_size)
            results[f"{spec.name}_precision"] = p
            results[f"{spec.name}_recall"] = r
    return results
