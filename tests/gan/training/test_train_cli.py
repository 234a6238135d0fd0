"""`stylegan train` on the command line: a tiny run end to end, resume, and bad input -> exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import write_image_folder

from gan.cli import main
from gan.training import checkpoint as ck
from gan.training.progress import read_stats

TINY = ["--cfg", "stylegan2", "--batch", "4", "--tick", "0.008", "--snap", "1", "--device", "cpu", "--fp32",
        "--cbase", "256", "--cmax", "16", "--map", "2", "--z-dim", "16", "--w-dim", "16", "--mbstd-group", "2",
        "--aug", "noaug", "--preview-images", "4", "--deterministic", "--seed", "3"]  # fmt: skip


def test_train_then_resume_from_the_command_line(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "data", count=8)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--outdir", str(out), "--kimg", "0.008", *TINY]) == 0
    assert (out / "network-final.safetensors").is_file()
    latest = ck.latest_checkpoint(out)
    assert latest is not None and ck.load_checkpoint(latest).meta["counters"]["cur_nimg"] == 8
    args = [
        "train",
        "--data",
        str(data),
        "--outdir",
        str(out),
        "--kimg",
        "0.016",
        "--resume",
        str(latest),
        *TINY,
    ]
    assert main(args) == 0
    assert [s["kimg"] for s in read_stats(out / "stats.jsonl")] == pytest.approx([0.004, 0.008, 0.016])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--kimg", "0"], "--kimg must be > 0"),
        (["--aug", "fixed"], "--aug fixed requires --p"),
        (["--batch", "0"], "--batch must be > 0"),
        (["--resume", "/nonexistent.pkl"], "No such file or directory"),
        (["--cfg", "nope"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    data = write_image_folder(tmp_path / "data", count=4)
    with pytest.raises(SystemExit) if "invalid choice" in message else _no_exit():
        code = main(["train", "--data", str(data), "--outdir", str(tmp_path / "o"), *TINY, *extra])
        assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_file_that_is_not_a_network_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_image_folder(tmp_path / "data", count=4)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"GIF89a not a pickle")
    assert (
        main(["train", "--data", str(data), "--outdir", str(tmp_path / "o"), "--resume", str(junk), *TINY])
        == 2
    )
    assert "neither a network pickle nor a training checkpoint" in capsys.readouterr().err


class _no_exit:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False
