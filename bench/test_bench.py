"""Checks of the bench's own measuring tools: `pytest bench/test_bench.py -q`.

The parity tests need a checkout of the official code: set STYLEGAN_OFFICIAL_REPO to its path
(NVlabs/stylegan3). Without it they are skipped and say why; the measuring tests always run.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import paired_timing, peak_memory  # noqa: E402


def test_cpu_peak_memory_sees_a_known_allocation() -> None:
    size = 64 * 2**20

    def allocate() -> None:
        x = torch.ones(size // 4, dtype=torch.float32)  # touched, so resident
        time.sleep(0.05)  # long enough for the 2 ms sampler to see it
        del x

    measured = peak_memory(allocate, torch.device("cpu"))["bytes"]
    assert 0.9 * size <= measured <= 1.3 * size, measured


def test_paired_ratio_of_a_known_slowdown() -> None:
    timing = paired_timing(
        lambda: time.sleep(0.02), lambda: time.sleep(0.01), torch.device("cpu"), warmup=0, rounds=3, calls=2
    )
    assert 1.5 <= timing.ratio <= 2.5, timing.to_dict()


OFFICIAL = os.environ.get("STYLEGAN_OFFICIAL_REPO")
needs_official = pytest.mark.skipif(
    not OFFICIAL, reason="set STYLEGAN_OFFICIAL_REPO to an NVlabs/stylegan3 checkout"
)


@needs_official
@pytest.mark.parametrize("arch", ["stylegan2", "stylegan3-t", "stylegan3-r"])
def test_same_images_from_one_config(arch: str) -> None:
    from bench_generate import generator_config
    from official import build_official_generator, copy_weights, load_official

    from gan.generator import build_generator

    code = load_official(Path(OFFICIAL or ""))
    config = generator_config(arch, 16, fp16=False, cbase=1024, cmax=32, map_layers=2)  # type: ignore[arg-type]
    torch.manual_seed(0)
    G_official = build_official_generator(code, config).eval()
    G_ours = build_generator(config).eval()
    copy_weights(G_official, G_ours)
    z = torch.randn([2, config.z_dim])
    with torch.no_grad():
        a = G_ours(z, None, psi=0.7, noise_mode="const")
        b = G_official(z, None, truncation_psi=0.7, noise_mode="const")
    # fp32, same weights: only summation order differs (measured <= 5e-7).
    assert (a - b).abs().max() < 1e-5
    assert a.std() > 0  # not a degenerate network
