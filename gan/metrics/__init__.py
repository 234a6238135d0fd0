"""Quality metrics: FID, KID and precision/recall over detector features (see compute.py)."""

from gan.metrics.compute import MetricSpec, compute_metrics, parse_metric
from gan.metrics.detector import INCEPTION_URL, VGG16_URL, FeatureDetector, load_detector

__all__ = [
    "INCEPTION_URL",
    "VGG16_URL",
    "FeatureDetector",
    "MetricSpec",
    "compute_metrics",
    "load_detector",
    "parse_metric",
]
