"""Training checkpoint IO: round trip, pruning, RNG capture, and a SIGKILL in the middle of a write."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.errors import FormatError
from gan.training import checkpoint as ck


def test_round_trip_keeps_tensors_and_meta(tmp_path: Path) -> None:
    tensors = {"G.w": torch.randn(3, 4), "opt_G.state.0.step": torch.tensor(7.0), "x": torch.arange(5)}
    meta = {"counters": {"cur_nimg": 1234}, "nested": [1, 2.5, None, "s"]}
    path = ck.save_checkpoint(tmp_path / ck.checkpoint_name(1234), tensors, meta)
    loaded = ck.load_checkpoint(path)
    assert loaded.meta == meta
    assert set(loaded.tensors) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(loaded.tensors[k], v)
    assert ck.latest_checkpoint(tmp_path) == path


def test_optimizer_state_round_trips_bit_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.0, 0.99))
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 4)).square().sum().backward()
        opt.step()
    tensors, meta = ck.optimizer_tensors("opt", opt)
    path = ck.save_checkpoint(
        tmp_path / "checkpoint-0000000001.safetensors", tensors, {"optimizers": {"opt": meta}}
    )
    net2 = torch.nn.Linear(4, 3)
    net2.load_state_dict(net.state_dict())
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.5)
    ck.load_optimizer(opt2, "opt", ck.load_checkpoint(path))
    x = torch.randn(5, 4)
    for n, o in ((net, opt), (net2, opt2)):
        o.zero_grad()
        n(x).square().sum().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters(), strict=True))


def test_rng_state_restores_every_generator() -> None:
    g = torch.Generator().manual_seed(3)
    state = ck.capture_rng_state({"latents": g})
    draws = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    ck.restore_rng_state(state, {"latents": g})
    assert (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=g).item(),
    ) == draws


def test_pruning_keeps_the_last_k_and_the_best(tmp_path: Path) -> None:
    fids = [50.0, 12.0, 30.0, 40.0, 45.0]
    for i, fid in enumerate(fids):
        ck.save_checkpoint(
            tmp_path / ck.checkpoint_name(i * 1000), {"t": torch.zeros(1)}, {"metrics": {"fid": fid}}
        )
    (tmp_path / ".checkpoint-0000009000.safetensors.tmp-1").write_bytes(b"partial")
    ck.prune_checkpoints(tmp_path, keep_last=2, best_metric="fid")
    names = [p.name for p in ck.list_checkpoints(tmp_path)]
    assert names == [ck.checkpoint_name(1000), ck.checkpoint_name(3000), ck.checkpoint_name(4000)]
    assert not list(tmp_path.glob(".checkpoint-*"))


def test_damaged_or_foreign_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / ck.checkpoint_name(5)
    bad.write_bytes(b"\x80\x04not a checkpoint")
    with pytest.raises(FormatError):
        ck.load_checkpoint(bad)
    assert ck.latest_checkpoint(tmp_path) is None


WRITER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from gan.training import checkpoint as ck
    out = Path(sys.argv[1])
    i = 0
    while True:
        i += 1
        big = torch.full((4_000_000,), float(i))  # 16 MB: the write takes long enough to be interrupted
        ck.save_checkpoint(out / ck.checkpoint_name(i), {"big": big}, {"i": i})
        ck.prune_checkpoints(out, keep_last=2)
        print(i, flush=True)
    """
)


@pytest.mark.parametrize("delay", [0.3, 0.7, 1.1])
def test_sigkill_while_writing_leaves_the_last_complete_checkpoint(tmp_path: Path, delay: float) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one checkpoint is complete
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    latest = ck.latest_checkpoint(tmp_path)
    assert latest is not None
    loaded = ck.load_checkpoint(latest)
    i = loaded.meta["i"]
    assert torch.equal(loaded.tensors["big"], torch.full((4_000_000,), float(i)))
    for path in ck.list_checkpoints(tmp_path):  # every listed checkpoint is whole, never a torn one
        assert ck.load_checkpoint(path).tensors["big"][-1].item() == ck.load_checkpoint(path).meta["i"]
