"""`--metrics` during training: values in stats.jsonl and in the checkpoints, the best checkpoint kept, and
a metric that cannot be computed stops the run before it starts.

The detector is the 16-feature TorchScript stand-in of tests/gan/metrics (the Inception file cannot be
downloaded here); fid50k_full and kid50k_full run on 16 generated images instead of 50k.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from train_helpers import tiny_options, write_image_folder

from gan.cli import main
from gan.config import GeneratorConfig
from gan.errors import ConfigError, FormatError
from gan.generator import build_generator
from gan.metrics import compute_metrics
from gan.training import checkpoint as ck
from gan.training.loop import train
from gan.training.options import best_metric
from gan.training.progress import read_stats
from tests.gan.metrics.metrics_standin import write_standin

METRICS = ("fid50k_full", "kid50k_full")


def test_metrics_land_in_stats_and_checkpoints_and_the_best_is_kept(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "data", count=16)
    detector = write_standin(tmp_path / "standin.pt")
    options = tiny_options(
        data,
        tmp_path / "run",
        snap=1,  # a snapshot, with metrics, at every tick: nimg 4, 12, 20, 28, 32
        keep=1,
        metrics=METRICS,
        detector=str(detector),
        metrics_num_gen=16,
        # A G learning rate 400x the preset's drives G away from the data, so the FID of G_ema grows
        # tick after tick (measured 1337.5, 1342.4, 1350.9, 1361.5, 1366.4; deterministic mode) and the
        # best checkpoint is the oldest: retention must keep it beside the newest.
        glr=1.0,
    )
    result = train(options)

    stats = read_stats(options.outdir / "stats.jsonl")
    assert [s["kimg"] for s in stats] == pytest.approx([0.004, 0.012, 0.020, 0.028, 0.032])
    fid = {round(s["kimg"] * 1000): s["Metrics/fid50k_full"] for s in stats}
    for line in stats:
        assert all(math.isfinite(line[f"Metrics/{m}"]) for m in METRICS)
        assert line["Metrics/fid50k_full"] > 0
    assert len(set(fid.values())) == len(fid), "G changes between ticks, so must the FID"
    assert result.metrics == {m: stats[-1][f"Metrics/{m}"] for m in METRICS}

    # Retention: the newest checkpoint (keep=1) and the one with the lowest FID, nothing else.
    best_nimg = min(fid, key=fid.__getitem__)
    assert best_nimg != 32, "the learning rate is chosen so that the best is not also the newest"
    on_disk = ck.list_checkpoints(options.outdir)
    assert [p.name for p in on_disk] == [ck.checkpoint_name(best_nimg), ck.checkpoint_name(32)]

    # Each checkpoint records the metrics of its own G_ema, and they are the real thing: recomputed
    # from the stored weights with the same detector and count, they agree.
    for path in on_disk:
        checkpoint = ck.load_checkpoint(path)
        nimg = checkpoint.meta["counters"]["cur_nimg"]
        assert checkpoint.meta["metrics"]["fid50k_full"] == fid[nimg]
        G = build_generator(GeneratorConfig.from_dict(checkpoint.meta["G_config"]))
        G.load_state_dict(checkpoint.module_state("G_ema"))
        again = compute_metrics(list(METRICS), G=G.eval(), data=data, detector=detector, num_gen=16)
        assert again == pytest.approx(checkpoint.meta["metrics"], rel=1e-6)


def test_best_metric_is_the_first_fid_or_kid() -> None:
    assert best_metric(["pr50k3_full", "kid50k_full", "fid50k_full"]) == "kid50k_full"
    assert best_metric(["pr50k3_full"]) is None
    assert best_metric([]) is None


def test_an_unknown_metric_is_refused_when_the_options_are_made(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown metric 'fid_everything'"):
        tiny_options(tmp_path, tmp_path / "run", metrics=("fid_everything",))
    with pytest.raises(ConfigError, match="--metrics-num-gen must be >= 2"):
        tiny_options(tmp_path, tmp_path / "run", metrics=METRICS, metrics_num_gen=1)


def test_a_detector_that_cannot_be_had_fails_before_training(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "data", count=4)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="--detector .*missing.pt: no such file"):
        train(tiny_options(data, out, metrics=METRICS, detector=str(tmp_path / "missing.pt")))
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x04K\x01.")  # a pickle of the number 1: no TorchScript archive inside
    with pytest.raises(FormatError, match="no TorchScript archive"):
        train(tiny_options(data, out, metrics=METRICS, detector=str(junk)))
    assert not out.exists(), "nothing may be written before the detector is loaded"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--metrics", "fid50k_full", "--detector", "/nonexistent/inception.pkl"], "no such file"),
        (["--metrics", "fid50k_full,fid_everything", "--detector", "x.pt"], "unknown metric"),
        (["--metrics", "kid50k_full", "--metrics-num-gen", "1", "--detector", "x.pt"], "must be >= 2"),
    ],
)
def test_cli_metric_failures_are_one_line_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    data = write_image_folder(tmp_path / "data", count=4)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--outdir", str(out), "--kimg", "0.004", "--batch", "4"]
    assert main([*args, "--cbase", "256", "--cmax", "16", "--mbstd-group", "2", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
