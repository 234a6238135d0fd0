"""gan.vocabulary: the shared words are defined once, torch-free, and refused in one way."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gan.errors import ConfigError, GanError
from gan.vocabulary import (
    CONTENT_TYPES,
    IMAGE_FORMATS,
    MAX_SEED,
    NOISE_MODES,
    PRESET_NAMES,
    check_image_format,
    check_metric_name,
    check_noise_mode,
    check_preset,
    check_seed,
)


def test_importing_it_does_not_import_torch() -> None:
    code = "import sys, gan.vocabulary; raise SystemExit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_values_match_the_official_meanings() -> None:
    assert NOISE_MODES == ("const", "random", "none")
    assert MAX_SEED == 2**32 - 1  # np.random.RandomState's range
    assert set(CONTENT_TYPES) == set(IMAGE_FORMATS) == {"png", "jpg", "webp"}
    assert PRESET_NAMES[0] == "auto" and "stylegan3-r" in PRESET_NAMES


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (check_noise_mode, "const", "loud"),
        (check_seed, MAX_SEED, MAX_SEED + 1),
        (check_seed, 0, -1),
        (check_image_format, "webp", "gif"),
        (check_preset, "paper256", "paper128"),
        (check_metric_name, "pr50k3_full", "fid50"),
    ],
)
def test_each_check_passes_good_values_and_refuses_bad_ones_as_config_errors(
    check: object, good: object, bad: object
) -> None:
    assert check(good) == good  # type: ignore[operator]
    with pytest.raises(ConfigError) as refused:
        check(bad)  # type: ignore[operator]
    assert (
        isinstance(refused.value, GanError)
        and repr(bad) in str(refused.value)
        or str(bad) in str(refused.value)
    )
