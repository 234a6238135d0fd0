"""`stylegan generate | mix | video` as a user runs them, against every official fixture."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan.cli import main
from gan.sampling import to_uint8

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "official"


def _fixtures() -> list[Path]:
    found = sorted(p.parent for p in FIXTURES.glob("*/meta.json"))
    assert found, f"no fixtures under {FIXTURES}"
    return found


def _meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text())


def _is_stylegan3(meta: dict) -> bool:
    return "synthesis_kwargs" not in meta["init_kwargs"]


def _stylegan(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "gan.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.parametrize("folder", _fixtures(), ids=lambda p: p.name)
def test_generate_writes_the_official_pngs(folder: Path, tmp_path: Path) -> None:
    meta = _meta(folder)
    c_dim = meta["init_kwargs"]["c_dim"]
    # One run per (psi, class): conditional fixtures label seed s with class s % c_dim.
    groups: dict[int | None, list[int]] = defaultdict(list)
    for seed in meta["seeds"]:
        groups[seed % c_dim if c_dim else None].append(seed)
    for psi in meta["psis"]:
        out = tmp_path / f"psi{psi}"
        for class_idx, seeds in groups.items():
            args = [
                "generate",
                "--network",
                str(folder / "network.pkl"),
                "--seeds",
                ",".join(map(str, seeds)),
            ]
            args += [
                "--trunc",
                str(psi),
                "--noise-mode",
                meta["noise_mode"],
                "--batch",
                "3",
                "--outdir",
                str(out),
            ]
            if class_idx is not None:
                args += ["--class", str(class_idx)]
            result = _stylegan(*args)
            assert result.returncode == 0, result.stderr
        for seed in meta["seeds"]:
            got = _read_png(out / f"seed{seed:04d}.png")
            want = _read_png(folder / f"seed{seed:04d}_psi{psi}.png")
            # One grey level: our float32 output is within 1e-4 of NVIDIA's, which can cross a rounding
            # boundary of the uint8 conversion.
            assert _max_diff(got, want) <= 1, f"seed {seed} psi {psi}"


def _mix_fixtures() -> list[Path]:
    return [f for f in _fixtures() if _meta(f).get("mix")]


@pytest.mark.parametrize("folder", _mix_fixtures(), ids=lambda p: p.name)
def test_mix_writes_the_official_mixes_and_grid(folder: Path, tmp_path: Path) -> None:
    meta = _meta(folder)
    mix = meta["mix"]
    expected = np.load(folder / "expected.npz")
    rows, cols = ",".join(map(str, mix["rows"])), ",".join(map(str, mix["cols"]))
    styles = ",".join(map(str, mix["styles"]))
    result = _stylegan(
        "mix", "--network", str(folder / "network.pkl"), "--rows", rows, "--cols", cols, "--styles", styles,
        "--trunc", str(mix["psi"]), "--noise-mode", meta["noise_mode"], "--outdir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for row in mix["rows"]:
        for col in mix["cols"]:
            want = to_uint8(expected[f"mix_{row}_{col}"])[0]
            assert _max_diff(_read_png(tmp_path / f"{row}-{col}.png"), want) <= 1  # see above
    for seed in {*mix["rows"], *mix["cols"]}:  # the grid's edge images are the plain seeds
        want = _read_png(folder / f"seed{seed:04d}_psi{float(mix['psi'])}.png")
        assert _max_diff(_read_png(tmp_path / f"{seed}-{seed}.png"), want) <= 1
    grid = _read_png(tmp_path / "grid.png")
    res = meta["init_kwargs"]["img_resolution"]
    assert grid.shape == ((len(mix["rows"]) + 1) * res, (len(mix["cols"]) + 1) * res, 3)
    assert grid[:res, :res].max() == 0  # the blank corner
    first = _read_png(tmp_path / f"{mix['rows'][0]}-{mix['cols'][0]}.png")
    np.testing.assert_array_equal(grid[res : 2 * res, res : 2 * res], first)


def _fastest_fixture() -> Path:
    return min(
        (f for f in _fixtures() if not _is_stylegan3(_meta(f)) and not _meta(f)["init_kwargs"]["c_dim"]),
        key=lambda f: _meta(f)["init_kwargs"]["img_resolution"],
    )


@pytest.mark.parametrize(("name", "frames"), [("walk.gif", 7), ("walk.mp4", 9), ("walk.webp", 5)])
def test_video_has_the_asked_frame_count(name: str, frames: int, tmp_path: Path) -> None:
    out = tmp_path / "sub" / name
    network = str(_fastest_fixture() / "network.pkl")
    args = ["video", "--network", network, "--seeds", "0,1,2", "--frames", str(frames), "--fps", "25"]
    result = _stylegan(*args, "--space", "z", "--trunc", "0.7", "--loop", "--out", str(out))
    assert result.returncode == 0, result.stderr
    if name.endswith(".mp4"):
        import imageio_ffmpeg

        reader = imageio_ffmpeg.read_frames(str(out))
        info = next(reader)
        assert math.isclose(info["fps"], 25, rel_tol=1e-3)
        assert sum(1 for _ in reader) == frames
    else:
        with Image.open(out) as im:
            assert im.n_frames == frames


def test_generate_random_noise_is_reproducible(tmp_path: Path) -> None:
    network = str(_fastest_fixture() / "network.pkl")
    for run in ("a", "b"):
        args = ["generate", "--network", network, "--seeds", "5", "--noise-mode", "random"]
        assert main([*args, "--outdir", str(tmp_path / run)]) == 0
    np.testing.assert_array_equal(
        _read_png(tmp_path / "a/seed0005.png"), _read_png(tmp_path / "b/seed0005.png")
    )


# ------------------------------------------------------------------------------------------------------
# Bad input: exit code 2, one line on stderr, nothing written


def _bad_inputs() -> list[tuple[str, list[str]]]:
    sg2 = str(_fastest_fixture() / "network.pkl")
    cond = next((str(f / "network.pkl") for f in _fixtures() if _meta(f)["init_kwargs"]["c_dim"]), sg2)
    return [
        ("seeds", ["generate", "--network", sg2, "--seeds", "3-1"]),
        ("seeds", ["generate", "--network", sg2, "--seeds", "a,b"]),
        ("class", ["generate", "--network", sg2, "--seeds", "0", "--class", "1"]),
        ("class", ["generate", "--network", cond, "--seeds", "0"]),
        ("class", ["generate", "--network", cond, "--seeds", "0", "--class", "99"]),
        ("translate", ["generate", "--network", sg2, "--seeds", "0", "--translate", "0.1,0"]),
        ("translate", ["generate", "--network", sg2, "--seeds", "0", "--translate", "1"]),
        ("trunc", ["generate", "--network", sg2, "--seeds", "0", "--trunc-cutoff", "99"]),
        ("batch", ["generate", "--network", sg2, "--seeds", "0", "--batch", "0"]),
        ("missing", ["generate", "--network", "/nonexistent/model.pkl", "--seeds", "0"]),
        ("styles", ["mix", "--network", sg2, "--rows", "0", "--cols", "1", "--styles", "fine"]),
        ("styles", ["mix", "--network", sg2, "--rows", "0", "--cols", "1", "--styles", "0-99"]),
        ("format", ["video", "--network", sg2, "--seeds", "0,1", "--out-is-set-below.avi"]),
        ("seeds", ["video", "--network", sg2, "--seeds", "0", "--frames", "3"]),
        ("fps", ["video", "--network", sg2, "--seeds", "0,1", "--fps", "100"]),
        ("rotate", ["video", "--network", sg2, "--seeds", "0,1", "--rotate", "0:90"]),
    ]


@pytest.mark.parametrize(("why", "args"), _bad_inputs(), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_input_exits_2_with_one_line(
    why: str, args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = list(args)
    if args[0] == "video":
        suffix = ".avi" if why == "format" else ".gif"
        args = [a for a in args if not a.startswith("--out-is")] + ["--out", str(tmp_path / f"out{suffix}")]
    else:
        args += ["--outdir", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("stylegan"), err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not any(tmp_path.glob("out.*"))


def test_bad_input_as_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    sg2 = str(_fastest_fixture() / "network.pkl")
    for args in (
        ["generate", "--network", sg2, "--seeds", "0", "--class", "1", "--outdir", str(tmp_path)],
        [
            "mix",
            "--network",
            sg2,
            "--rows",
            "0",
            "--noise-mode",
            "loud",
            "--cols",
            "1",
            "--outdir",
            str(tmp_path),
        ],
    ):
        result = _stylegan(*args)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
