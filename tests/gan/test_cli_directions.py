"""`stylegan directions`, and `--edit` / `--sweep` on `stylegan generate` and `stylegan video`, as a user
runs them: the files they write hold what the library computes, and bad input is exit 2 with one line."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan.cli import main
from gan.editing import Edit, apply_edits, load_directions, sefa
from gan.io.checkpoint import load_network
from gan.sampling import Sampler, to_uint8

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "worker" / "assets" / "demo" / "cartoon-faces-64.safetensors"
SG3 = ROOT.parent / "shared" / "fixtures" / "official" / "sg3t_uncond_64" / "network.pkl"


@pytest.mark.parametrize("network", [DEMO, SG3], ids=["demo-sg2", "sg3t"])
def test_generate_with_an_edit_writes_the_library_s_pixels(
    network: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dirs = tmp_path / "dirs.npz"
    assert (
        main(["directions", "--network", str(network), "--layers", "coarse", "--k", "3", "--out", str(dirs)])
        == 0
    )
    printed = capsys.readouterr().out.split()
    assert printed[0::3] == ["sefa-coarse-0", "sefa-coarse-1", "sefa-coarse-2"]
    found = load_directions(dirs)
    G = load_network(network, "cpu")
    for mine, theirs in zip(sefa(G, "coarse", 3), found.values(), strict=True):
        assert np.array_equal(mine.vector, theirs.vector)

    args = [
        "generate",
        "--network",
        str(network),
        "--seeds",
        "3,4",
        "--trunc",
        "0.7",
        "--directions",
        str(dirs),
    ]
    assert (
        main(
            [
                *args,
                "--edit",
                "sefa-coarse-0:5",
                "--edit",
                "sefa-coarse-1:-2@0-1",
                "--outdir",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )
    assert main([*args, "--edit", "sefa-coarse-0:0", "--outdir", str(tmp_path / "zero")]) == 0
    assert main([*args[:-2], "--outdir", str(tmp_path / "plain")]) == 0

    sampler = Sampler(G)
    ws = sampler.ws_for_seeds([3, 4], psi=0.7)
    edits = [Edit(found["sefa-coarse-0"], 5.0), Edit(found["sefa-coarse-1"], -2.0, "0-1")]
    expected = to_uint8(sampler.synthesize(apply_edits(ws, edits, G.config), noise_seeds=[3, 4]))
    for i, seed in enumerate([3, 4]):
        name = f"seed{seed:04d}.png"
        edited = np.asarray(Image.open(tmp_path / "e" / name))
        plain = np.asarray(Image.open(tmp_path / "plain" / name))
        assert np.abs(edited.astype(int) - expected[i].astype(int)).max() <= 1
        assert np.array_equal(np.asarray(Image.open(tmp_path / "zero" / name)), plain)
        assert np.abs(edited.astype(int) - plain.astype(int)).mean() > 1  # the edit changed the picture


def test_ganspace_and_a_sweep_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = tmp_path / "g.npz"
    cmd = ["directions", "--network", str(DEMO), "--method", "ganspace", "--samples", "3000", "--k", "2"]
    assert main([*cmd, "--out", str(dirs)]) == 0
    found = load_directions(dirs)
    assert list(found) == ["ganspace-all-0", "ganspace-all-1"]
    assert all(d.sigma is not None and d.sigma > 0 for d in found.values())
    out = tmp_path / "clip.gif"
    video = [
        "video",
        "--network",
        str(DEMO),
        "--seeds",
        "5",
        "--frames",
        "6",
        "--fps",
        "6",
        "--directions",
        str(dirs),
    ]
    assert main([*video, "--sweep", "ganspace-all-0:-3:3", "--out", str(out)]) == 0
    frames = Image.open(io.BytesIO(out.read_bytes()))
    assert frames.n_frames == 6
    first, last = (np.asarray(_frame(frames, i).convert("RGB"), dtype=int) for i in (0, 5))
    assert np.abs(first - last).mean() > 1  # the clip moves along the direction


def _frame(image: Image.Image, index: int) -> Image.Image:
    image.seek(index)
    return image.copy()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--edit", "sefa-all-0:2"], "--edit needs --directions"),
        (["--edit", "nope:2", "--directions", "{dirs}"], "unknown direction 'nope'"),
        (["--edit", "sefa-all-0:nan", "--directions", "{dirs}"], "finite"),
        (["--edit", "sefa-all-0:2@0-99", "--directions", "{dirs}"], "out of range"),
        (["--edit", "sefa-all-0", "--directions", "{dirs}"], "expected ID:STRENGTH"),
        (["--edit", "sefa-all-0:1", "--directions", "{junk}"], "not a directions file"),
        (["--edit", "sefa-all-0:1", "--directions", "{badzip}"], "not a directions file"),
    ],
)
def test_bad_edits_exit_2_with_one_line(extra: list[str], message: str, tmp_path: Path) -> None:
    dirs, junk = tmp_path / "d.npz", tmp_path / "junk.npz"
    assert main(["directions", "--network", str(DEMO), "--k", "1", "--out", str(dirs)]) == 0
    junk.write_bytes(b"PK not really")
    badzip = tmp_path / "badzip.npz"
    badzip.write_bytes(b"PK\x03\x04 a zip's magic and nothing of one")  # np.load opens it as a zip
    args = [a.format(dirs=dirs, junk=junk, badzip=badzip) for a in extra]
    cmd = [
        sys.executable,
        "-m",
        "api.cli",
        "generate",
        "--network",
        str(DEMO),
        "--seeds",
        "0",
        "--outdir",
        str(tmp_path / "o"),
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_directions_refuses_bad_options(tmp_path: Path) -> None:
    out = str(tmp_path / "d.npz")
    assert main(["directions", "--network", str(DEMO), "--layers", "fine,coarse", "--out", out]) == 2
    assert main(["directions", "--network", str(DEMO), "--layers", "0-40", "--out", out]) == 2
    assert main(["directions", "--network", str(DEMO), "--k", "0", "--out", out]) == 2
    assert main(["directions", "--network", str(DEMO), "--out", str(tmp_path / "d.txt")]) == 2
    assert (
        main(
            ["directions", "--network", str(DEMO), "--method", "ganspace", "--layers", "coarse", "--out", out]
        )
        == 2
    )
    assert not (tmp_path / "d.npz").exists()
