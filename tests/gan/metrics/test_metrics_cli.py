"""`stylegan metrics --network PKL --data ZIP --metrics fid50k_full,kid50k_full --detector FILE` on every
official fixture (found through its meta.json), with the 16-feature stand-in detector, and its bad inputs:
exit 2, one line on stderr, nothing on stdout.

fid50k_full and kid50k_full run on 4 generated images (`--num-gen`): the StyleGAN3 fixtures take about a
second per image on CPU; the values are then biased, but what is checked here is the plumbing: the CLI's
numbers are the library's for the same network, data, detector and seed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from metrics_standin import write_standin

from gan.cli import main
from gan.io.checkpoint import load_network
from gan.metrics import compute_metrics
from gan.training.dataset import prepare_dataset
from gan.training.dataset_prepare import PrepareLimits

OFFICIAL = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "official"
FIXTURES = sorted(p.parent for p in OFFICIAL.glob("*/meta.json") if (p.parent / "network.pkl").is_file())
METRICS = "fid50k_full,kid50k_full"


def test_fixtures_are_present() -> None:
    assert FIXTURES, f"no official fixtures under {OFFICIAL}"


def fixture_config(fixture: Path) -> tuple[int, int]:
    kwargs = json.loads((fixture / "meta.json").read_text())["init_kwargs"]
    return int(kwargs["img_resolution"]), int(kwargs["c_dim"])


@pytest.fixture(scope="module")
def dataset_for(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int, int], Path]:
    """A prepared set of 12 two-colour images per (resolution, classes), labelled when classes > 0."""
    made: dict[tuple[int, int], Path] = {}

    def get(resolution: int, classes: int) -> Path:
        if (resolution, classes) not in made:
            root = tmp_path_factory.mktemp(f"data{resolution}_{classes}")
            rng = np.random.default_rng(resolution)
            for i in range(12):
                a = np.zeros((resolution, resolution, 3), np.uint8)
                a[:] = rng.integers(0, 256, 3)
                a[resolution // 4 : -resolution // 4, resolution // 4 : -resolution // 4] = rng.integers(
                    0, 256, 3
                )
                PIL.Image.fromarray(a).save(root / f"{i:03d}.png")
            labels = {f"{i:03d}.png": i % classes for i in range(12)} if classes else None
            dest = root.parent / f"{root.name}.zip"
            prepare_dataset(root, dest, resolution, labels=labels, limits=PrepareLimits(min_side=resolution))
            made[resolution, classes] = dest
        return made[resolution, classes]

    return get


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.name for p in FIXTURES])
def test_metrics_command_on_each_fixture(
    fixture: Path,
    dataset_for: Callable[[int, int], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = dataset_for(*fixture_config(fixture))
    detector = write_standin(tmp_path / "standin.pt")
    network = fixture / "network.pkl"
    argv = ["metrics", "--network", str(network), "--data", str(data), "--metrics", METRICS]
    argv += ["--detector", str(detector), "--num-gen", "4", "--batch", "4", "--seed", "7"]
    assert main(argv) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["network"] == str(network) and out["data"] == str(data)
    results = out["results"]
    assert set(results) == {"fid50k_full", "kid50k_full"}
    assert results["fid50k_full"] > 0 and np.isfinite(results["kid50k_full"])
    # The command is the library: same numbers from the loaded network with the same arguments.
    again = compute_metrics(
        METRICS, load_network(network), data, detector=detector, num_gen=4, batch=4, seed=7
    )
    assert results == pytest.approx(again, rel=1e-6)


@pytest.fixture(scope="module")
def small(dataset_for: Callable[[int, int], Path]) -> tuple[Path, Path]:
    """The smallest unconditional fixture and a data set for it."""
    fixture = min(FIXTURES, key=lambda f: (fixture_config(f)[1] > 0, fixture_config(f)[0]))
    return fixture / "network.pkl", dataset_for(*fixture_config(fixture))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--detector": "{tmp}/missing-inception.pkl"}, "No such file or directory"),
        (
            {"--detector": "{tmp}/junk.pkl"},
            "--detector {tmp}/junk.pkl: the pickle holds no TorchScript archive",
        ),
        ({"--detector-sha256": "0" * 64}, "sha256 mismatch"),
        ({"--metrics": "fid50k_full,fid_everything"}, "unknown metric 'fid_everything'"),
        ({"--metrics": ","}, "no metric given"),
        ({"--num-gen": "1"}, "num_gen must be >= 2"),
        ({"--network": "{tmp}/junk.pkl"}, "--network {tmp}/junk.pkl: not an official network pickle"),
        ({"--network": "{tmp}/missing.pkl"}, "No such file or directory"),
        ({"--data": "{tmp}/missing.zip"}, "No such file or directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    small: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str],
    message: str,
) -> None:
    network, data = small
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04K\x01.")  # a pickle of the number 1
    options = {
        "--network": str(network),
        "--data": str(data),
        "--metrics": METRICS,
        "--detector": str(write_standin(tmp_path / "standin.pt")),
        "--num-gen": "4",
    }
    options.update({k: v.format(tmp=tmp_path) for k, v in change.items()})
    argv = ["metrics", *[x for kv in options.items() for x in kv]]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message.format(tmp=tmp_path) in captured.err, captured.err
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert captured.out == ""
