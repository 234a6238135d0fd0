"""gan.host_memory: a freed large buffer is reused without page faults, only once it is asked for.

Each case runs in a fresh interpreter: malloc's settings are process-wide and the test process's own
history (what pytest and torch allocated before) would blur a fault count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Renders the bundled demo model (64 px) at batch 8 from a thread, as the inference worker's batcher
# does, and prints the minor page faults per pass after two warm-up passes. By default glibc hands some of
# each pass's freed buffers back to the kernel (thousands of faults a pass, how many varies from one
# process to the next); kept, none come back.
PROBE = """
import json, resource, sys, threading
from gan.host_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
import torch
from gan.io.checkpoint import load_network
from gan.sampling import Sampler
torch.set_num_threads(1)
out = {"applied": applied}
def passes():
    sampler = Sampler(load_network(sys.argv[2]), device=torch.device("cpu"))
    ws = sampler.ws_for_seeds(list(range(8)), psi=0.7)
    for _ in range(2):
        sampler.images_from_ws(ws, noise_mode="const", batch_size=8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        sampler.images_from_ws(ws, noise_mode="const", batch_size=8)
    out["faults_per_pass"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
thread = threading.Thread(target=passes)
thread.start()
thread.join()
print(json.dumps(out))
"""
DEMO_MODEL = Path(__file__).parents[2] / "worker" / "assets" / "demo" / "cartoon-faces-64.safetensors"


def probe(mode: str) -> dict[str, float | bool | None]:
    argv = [sys.executable, "-c", PROBE, mode, str(DEMO_MODEL)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    result: dict[str, float | bool | None] = json.loads(done.stdout)
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings are Linux-only")
def test_kept_memory_is_reused_without_faults() -> None:
    default = probe("default")
    kept = probe("keep")
    assert kept["applied"] is True
    assert isinstance(default["faults_per_pass"], float) and default["faults_per_pass"] >= 500
    assert isinstance(kept["faults_per_pass"], float) and kept["faults_per_pass"] < 50
