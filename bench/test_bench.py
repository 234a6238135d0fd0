"""Checks of the bench's own measuring tools: `pytest bench/test_bench.py -q`.

The parity tests need a checkout of the official code: set STYLEGAN_OFFICIAL_REPO to its path
(NVlabs/stylegan3). Without it they are skipped and say why; the measuring tests always run.
"""

from __future__ import annotations

import json
import os
import subprocess
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


def test_service_bench_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real `stylegan serve` and a tiny random-weight model: two levels, every figure present."""
    from bench_service import PHASES, TABLE_HEAD, main

    out = tmp_path / "service.json"
    argv = ["--arch", "stylegan2", "--res", "16", "--cbase", "256", "--cmax", "16", "--map", "2"]
    argv += ["--device", "cpu", "--threads", "1", "--levels", "1,3", "--seconds", "1", "--rounds", "2"]
    argv += ["--level-warmup", "0.3", "--bare-seconds", "0.1", "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[:2] == TABLE_HEAD.splitlines() and len(printed) == 4  # one row per level
    assert all(row.startswith("| ") and row.count(" | ") == 7 for row in printed[2:])
    result = json.loads(out.read_text())
    assert [level["clients"] for level in result["levels"]] == [1, 3]
    for level in result["levels"]:
        assert level["failed"] == {} and level["img_per_s"] > 0 and len(level["rounds"]) == 2
        assert 0 < level["latency_ms"]["p50"] <= level["latency_ms"]["p99"]
        # Every image came from a forward pass of 1..clients rows, and its time is broken down.
        sizes = [int(b) for b in level["images_by_batch_size"]]
        assert sizes and all(1 <= b <= level["clients"] for b in sizes)
        assert set(level["phases_ms_mean"]) == set(PHASES)
        phases = level["phases_ms_mean"]
        assert phases["synthesis"] + phases["batch-wait"] <= phases["worker"] + 0.2  # each rounded to 0.1 ms
        # Each round: the bare generator at a batch size the service formed, PNG off and on.
        for r in level["rounds"]:
            assert str(r["bare"]["batch"]) in level["images_by_batch_size"]
            assert r["bare"]["no_encoding"]["img_per_s"] > 0 and r["bare"]["png"]["img_per_s"] > 0
            assert r["ratio"] == pytest.approx(r["img_per_s"] / r["bare"]["png"]["img_per_s"])
    assert result["environment"]["torch"] == torch.__version__


@needs_official
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    """bench/gpu_check.sh --dry-run: each step at tiny settings on the CPU, then the RESULTS.md block
    with every reference row, measured or saying why not (~30 s on 2 shared cores)."""
    out = tmp_path / "check"
    script = Path(__file__).parent / "gpu_check.sh"
    steps = "generate,train,cold-start"  # the service bench has its own end-to-end test
    command = ["bash", str(script), OFFICIAL or "", "--dry-run", "--out", str(out), "--steps", steps]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for step in steps.split(","):
        assert (out / "status" / step).read_text().strip() == "ok", (out / f"{step}.log").read_text()[-3000:]
    assert (out / "status" / "service").read_text().startswith("skipped (not in --steps)")
    report = run.stdout
    assert report == (out / "report.md").read_text()
    for label in ("StyleGAN2 1024 px, batch 32, fp16", "StyleGAN3-T 1024 px, batch 1, fp16"):
        assert f"| {label} | " in report and "not measured (row not in this run)" in report
    assert "| stylegan2 32 px, batch 2, fp32 (tiny) | — | " in report
    assert "| Training stylegan2 32 px, batch 4, bgc (tiny) |" in report
    cold = json.loads((out / "cold_start.json").read_text())
    assert {r["side"] for r in cold["runs"]} == {"official", "ours-pkl", "ours-st", "import"}
    assert cold["png_max_abs_diff_vs_official"] == {"ours-pkl": 0, "ours-st": 0}
    assert "| ours-pkl | " in report and "not measured (skipped (not in --steps))" in report
