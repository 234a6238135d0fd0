"""Issue 4's "done when", on the command line: `stylegan dataset prepare` on a folder of generated images,
`stylegan train --resume <official fixture>` fine-tuning on CPU, then the exported model loads and
`stylegan generate` samples from it. One run per fixture, at the fixture's resolution (its meta.json).

Each run trains one tick of one iteration of 4 images: enough to write every output and to check what the
step did (the architecture is the pickle's, the official resume changes apply, G moved, D continued from
the pickle's D). The StyleGAN3 fixtures (64 px, reference filters on CPU) cost most of the time: ~10 and
~30 s on a busy 2-core machine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan.cli import main
from gan.io.checkpoint import load_network
from gan.training import checkpoint as ck
from gan.training.dataset import ImageDataset
from gan.training.networks import read_resume_networks
from gan.training.progress import read_stats

OFFICIAL = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "official"
FIXTURES = sorted(p.parent for p in OFFICIAL.glob("*/meta.json") if (p.parent / "network.pkl").is_file())
PREVIEWS = 2  # --preview-images: a 2x1 grid of seeds 0 and 1


def test_fixtures_are_present() -> None:
    assert FIXTURES, f"no official fixtures under {OFFICIAL}"


def fixture_config(fixture: Path) -> tuple[int, int]:
    kwargs = json.loads((fixture / "meta.json").read_text())["init_kwargs"]
    return int(kwargs["img_resolution"]), int(kwargs["c_dim"])


def write_source_images(root: Path, resolution: int, classes: int, count: int = 24) -> Path:
    """Non-square drawings (a disc and a bar on a gradient), half PNG and half JPEG, so that prepare has
    to crop, resize and decode both; with `classes`, a labels file naming each image's class."""
    rng = np.random.RandomState(resolution + classes)
    root.mkdir(parents=True)
    h, w = resolution * 3 // 2, resolution * 2
    yy, xx = np.mgrid[0:h, 0:w]
    labels = {}
    for i in range(count):
        img = np.empty((h, w, 3), np.float64)
        img[:] = rng.uniform(0, 255, 3) * (xx / w)[..., None] + rng.uniform(0, 80, 3)
        cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.1, 0.3) * h
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(0, 255, 3)
        img[int(cy) : int(cy) + 3, :] = rng.uniform(0, 255, 3)
        name = f"drawing{i:03d}." + ("png" if i % 2 else "jpg")
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / name)
        labels[name] = i % classes if classes else None
    if classes:
        (root.parent / "labels.json").write_text(json.dumps(labels))
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int, int], Path]:
    """`stylegan dataset prepare` once per (resolution, classes), shared by the fixtures that need it."""
    made: dict[tuple[int, int], Path] = {}

    def get(resolution: int, classes: int) -> Path:
        if (resolution, classes) not in made:
            root = tmp_path_factory.mktemp(f"source{resolution}_{classes}")
            source = write_source_images(root / "images", resolution, classes)
            dest = root / "dataset.zip"
            argv = ["dataset", "prepare", "--source", str(source), "--dest", str(dest)]
            argv += ["--resolution", str(resolution), "--quiet"]
            if classes:
                argv += ["--labels", str(root / "labels.json")]
            assert main(argv) == 0
            made[resolution, classes] = dest
        return made[resolution, classes]

    return get


def grid_tiles(path: Path, resolution: int) -> list[np.ndarray]:
    grid = np.asarray(Image.open(path).convert("RGB"))
    assert grid.shape == (resolution, PREVIEWS * resolution, 3)
    return [grid[:, i * resolution : (i + 1) * resolution] for i in range(PREVIEWS)]


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.name for p in FIXTURES])
def test_prepare_fine_tune_export_generate(
    fixture: Path,
    prepared: Callable[[int, int], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    resolution, classes = fixture_config(fixture)
    data = prepared(resolution, classes)
    capsys.readouterr()
    dataset = ImageDataset(data, use_labels=classes > 0)
    assert (len(dataset), dataset.resolution) == (24, resolution)
    if classes:
        assert dataset.label_dim == classes
    else:
        assert not dataset.has_labels

    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--outdir", str(out), "--resume", str(fixture / "network.pkl")]
    argv += ["--kimg", "0.004", "--batch", "4", "--device", "cpu", "--preview-images", str(PREVIEWS)]
    argv += ["--cond"] if classes else []
    assert main(argv) == 0, capsys.readouterr().err

    # Previews: reals, the fixture's own samples before any step, and a grid at the snapshot.
    for name in ("reals.png", "fakes_init.png", "fakes000000.png"):
        grid_tiles(out / name, resolution)
    if not classes:  # preview labels come from the reals; the fixture's outputs are for one-hot classes
        expected = np.load(fixture / "expected.npz")
        for seed, tile in enumerate(grid_tiles(out / "fakes_init.png", resolution)):
            official = np.rint((expected[f"seed{seed}_psi1.0"][0].transpose(1, 2, 0) + 1) * 127.5)
            # 1 level: the fixture is NVIDIA's float output; ours differs by ~1e-5 and may round across.
            assert np.abs(tile.astype(np.float64) - official.clip(0, 255)).max() <= 1, seed

    # Checkpoint and stats of the one tick.
    (checkpoint,) = ck.list_checkpoints(out)
    final = ck.load_checkpoint(checkpoint)
    assert final.meta["counters"]["cur_nimg"] == 4
    (stats,) = read_stats(out / "stats.jsonl")
    assert stats["kimg"] == pytest.approx(0.004)
    assert all(np.isfinite(stats[k]) for k in ("Loss/G/loss", "Loss/D/loss", "augment_p"))
    assert all(torch.isfinite(v).all() for v in final.tensors.values() if v.is_floating_point())

    # What the step did: the architecture is the pickle's, not the preset's; the official resume changes
    # (faster ADA, no EMA ramp-up); G moved; D went on from the pickle's D rather than from scratch.
    nets = read_resume_networks(fixture / "network.pkl")
    G_src = nets["G"] if "G" in nets else nets["G_ema"]
    assert final.meta["G_config"] == G_src.config.to_dict()  # type: ignore[union-attr]
    assert final.meta["preset"]["ada_kimg"] == 100.0 and final.meta["preset"]["ema_rampup"] is None
    start, trained = G_src.state_dict(), final.module_state("G")
    assert any(not torch.equal(v, start[k]) for k, v in trained.items() if v.is_floating_point())
    if "D" in nets:
        d0, d1 = nets["D"].state_dict(), final.module_state("D")
        # One Adam step moves each weight by about the learning rate (0.0025); from scratch is O(1) away.
        assert all(torch.allclose(d0[k], d1[k], atol=0.05) for k in d0 if d0[k].is_floating_point())
        assert any(not torch.equal(d0[k], d1[k]) for k in d0 if d0[k].is_floating_point())

    # The exported generator is G_ema of the last checkpoint, and `stylegan generate` samples from it.
    model = out / "network-final.safetensors"
    G = load_network(model)
    G_ema = final.module_state("G_ema")
    assert all(torch.equal(v, G_ema[k]) for k, v in G.state_dict().items())
    samples = tmp_path / "samples"
    argv = ["generate", "--network", str(model), "--seeds", "0-1", "--outdir", str(samples)]
    argv += ["--class", "1"] if classes else []
    assert main(argv) == 0, capsys.readouterr().err
    for seed in (0, 1):
        with Image.open(samples / f"seed{seed:04d}.png") as png:
            assert png.size == (resolution, resolution)


def test_fine_tune_from_our_model_file(
    prepared: Callable[[int, int], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The service stores every model in our format (G_ema alone) and fine-tunes from that file: G starts
    from its weights, D from scratch, as the official resume of a pickle without D."""
    fixture = min(FIXTURES, key=lambda f: (fixture_config(f)[1] > 0, fixture_config(f)[0]))
    resolution, classes = fixture_config(fixture)
    ours = tmp_path / "model.safetensors"
    assert main(["convert", str(fixture / "network.pkl"), str(ours)]) == 0, capsys.readouterr().err
    out = tmp_path / "run"
    argv = ["train", "--data", str(prepared(resolution, classes)), "--outdir", str(out)]
    argv += ["--resume", str(ours), "--kimg", "0.004", "--batch", "4", "--preview-images", str(PREVIEWS)]
    argv += ["--cbase", "1024", "--cmax", "64"]  # a small D from scratch (G's size is the file's)
    argv += ["--cond"] if classes else []
    assert main(argv) == 0, capsys.readouterr().err
    final = ck.load_checkpoint(ck.list_checkpoints(out)[-1])
    start = load_network(ours).state_dict()
    assert final.meta["G_config"] == load_network(ours).config.to_dict()
    assert (final.meta["D_config"]["channel_base"], final.meta["D_config"]["channel_max"]) == (1024, 64)
    trained = final.module_state("G")
    assert start.keys() == trained.keys()
    moved = [k for k, v in trained.items() if v.is_floating_point() and not torch.equal(v, start[k])]
    assert moved and all(torch.allclose(trained[k], start[k], atol=0.05) for k in moved)
