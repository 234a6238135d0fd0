"""`stylegan convert` and `stylegan info`: results on good files, exit 2 and one line on bad ones."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hostile import reduce_pickle

from gan.cli import main
from gan.io.checkpoint import inspect_network

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "official"
ALL_FIXTURES = sorted(FIXTURES.glob("*/network.pkl"))


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "gan.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_hostile_file_exits_2_with_one_line_and_no_side_effect(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(reduce_pickle("posix", "system", (f"touch {shlex.quote(str(canary))}",), 4))
    for args in (["info", str(evil)], ["convert", str(evil), str(tmp_path / "out.safetensors")]):
        proc = _run_cli(*args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "refused global 'posix.system'" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert not canary.exists()
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("truncated.pkl", ALL_FIXTURES[0].read_bytes()[:5000] if ALL_FIXTURES else b"", "error"),
        ("empty.pkl", b"", "error"),
        ("text.pkl", b"hello world", "not a network file"),
        (
            "builtins.pkl",
            reduce_pickle("builtins", "exec", ("print(1)",), 2),
            "refused global 'builtins.exec'",
        ),
    ],
)
def test_broken_files_exit_2_in_process(name: str, data: bytes, message: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_missing_file_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["info", str(tmp_path / "nope.pkl")]) == 2
    assert "No such file" in capsys.readouterr().err


@pytest.mark.parametrize("pkl", ALL_FIXTURES, ids=[p.parent.name for p in ALL_FIXTURES])
def test_convert_then_info(pkl: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "g.safetensors"
    assert main(["convert", str(pkl), str(out), "--license", "NVIDIA Source Code License"]) == 0
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    source = inspect_network(pkl)
    assert info["format"] == "stylegan-service"
    assert info["license"] == "NVIDIA Source Code License"
    for key in ("architecture", "resolution", "z_dim", "w_dim", "c_dim", "num_ws", "num_params"):
        assert info[key] == getattr(source, key), key
    # a second conversion onto the same OUT is refused unless forced
    assert main(["convert", str(pkl), str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["convert", str(out), str(out), "--force"]) == 2


def test_info_prints_a_table(capsys) -> None:
    assert main(["info", str(ALL_FIXTURES[0])]) == 0
    text = capsys.readouterr().out
    assert "sha256" in text and "architecture" in text
