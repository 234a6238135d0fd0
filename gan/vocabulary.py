"""The words every layer shares, defined once and without torch, so that the worker's messages and the
API's schemas import them instead of re-typing them: noise modes, the seed range, image formats,
training presets and metric names.

Each `check_*` is the one place a value from outside is validated; it raises `ConfigError` (a
`GanError`), so the command line answers exit code 2 and the service 422 whatever layer asked.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from gan.errors import ConfigError

# How the per-pixel noise inputs are drawn (StyleGAN2 section 2.3): the stored constant buffers, fresh
# Gaussian noise, or none at all. The official scripts default to "const".
NoiseMode = Literal["const", "random", "none"]
NOISE_MODES: tuple[NoiseMode, ...] = get_args(NoiseMode)

# np.random.RandomState, which turns a seed into z as the official scripts do, accepts [0, 2**32).
MAX_SEED = 2**32 - 1

ImageFormat = Literal["png", "jpg", "webp"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = get_args(ImageFormat)
CONTENT_TYPES: dict[ImageFormat, str] = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}

# The official train.py --cfg values, plus "auto" (the official default for StyleGAN2-ADA).
PresetName = Literal[
    "auto", "stylegan2", "paper256", "paper512", "paper1024", "cifar", "stylegan3-t", "stylegan3-r"
]
PRESET_NAMES: tuple[PresetName, ...] = get_args(PresetName)

# The official metric names: fid50k_full, kid50k_full, pr50k3_full (pr<N>k<neighbourhood>) and the
# variants without `_full`, whose real set is as large as the generated one.
METRIC_NAME = re.compile(r"^(fid|kid)(\d+)k(_full)?$|^pr(\d+)k(\d+)(_full)?$")
METRIC_EXAMPLES = "fid50k_full, kid50k_full, pr50k3_full"


def check_noise_mode(value: str) -> NoiseMode:
    if value not in NOISE_MODES:
        raise ConfigError(f"invalid noise mode {value!r}: use one of {', '.join(NOISE_MODES)}")
    return value


def check_seed(value: int) -> int:
    if not 0 <= value <= MAX_SEED:
        raise ConfigError(f"seed {value} is out of range: seeds are integers in [0, {MAX_SEED}]")
    return value


def check_image_format(value: str) -> ImageFormat:
    if value not in IMAGE_FORMATS:
        raise ConfigError(f"unknown image format {value!r}: use one of {', '.join(IMAGE_FORMATS)}")
    return value


def check_preset(value: str) -> PresetName:
    if value not in PRESET_NAMES:
        raise ConfigError(f"unknown --cfg {value!r}; choose one of {', '.join(PRESET_NAMES)}")
    return value


def check_metric_name(value: str) -> str:
    if METRIC_NAME.match(value) is None:
        raise ConfigError(f"unknown metric {value!r}; expected e.g. {METRIC_EXAMPLES}")
    return value
