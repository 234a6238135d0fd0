"""prepare_dataset: every image mode, each transform, labels, and every hostile or broken input."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from gan.cli import main
from gan.errors import ConfigError
from gan.training.dataset import ImageDataset
from gan.training.dataset_prepare import (
    BOMB,
    COMPRESSION_RATIO,
    NOT_AN_IMAGE,
    SYMLINK,
    TOO_LARGE,
    TOO_MANY_FILES,
    TOO_SMALL,
    TRUNCATED,
    UNLABELED,
    UNSAFE_PATH,
    NoUsableImagesError,
    PrepareLimits,
    archive_name,
    prepare_dataset,
    to_rgb,
)

R = 16
LIMITS = PrepareLimits(min_side=16)


def png_bytes(img: PIL.Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> PIL.Image.Image:
    return PIL.Image.new("RGB", size, rgb)


def read_zip_images(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as z:
        return {
            n: np.array(PIL.Image.open(io.BytesIO(z.read(n))))
            for n in sorted(z.namelist())
            if n.endswith(".png")
        }


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# -- modes --------------------------------------------------------------------------------------------


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height RGB with an empty image stream (a few dozen bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def mode_images() -> dict[str, tuple[bytes, tuple[int, int, int]]]:
    """file name -> (bytes, the RGB every output pixel must have), for each mode Pillow writes."""
    out: dict[str, tuple[bytes, tuple[int, int, int]]] = {}
    out["l.png"] = (png_bytes(PIL.Image.new("L", (32, 32), 100)), (100, 100, 100))
    out["la_transparent.png"] = (png_bytes(PIL.Image.new("LA", (32, 32), (7, 0))), (255, 255, 255))
    out["la_opaque.png"] = (png_bytes(PIL.Image.new("LA", (32, 32), (60, 255))), (60, 60, 60))
    pal = PIL.Image.new("P", (32, 32), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    out["p.png"] = (png_bytes(pal), (10, 200, 30))
    pal_t = pal.copy()
    out["p_transparent.png"] = (png_bytes(pal_t, transparency=1), (255, 255, 255))
    out["rgba_half.png"] = (png_bytes(PIL.Image.new("RGBA", (32, 32), (0, 0, 0, 128))), (127, 127, 127))
    out["cmyk.tif"] = (png_bytes(PIL.Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "TIFF"), (255, 0, 0))
    out["i16.png"] = (png_bytes(PIL.Image.fromarray(np.full((32, 32), 32896, np.uint16))), (128, 128, 128))
    out["i32.tif"] = (
        png_bytes(PIL.Image.fromarray(np.full((32, 32), 65535, np.int32)), "TIFF"),
        (255, 255, 255),
    )
    out["f.tif"] = (
        png_bytes(PIL.Image.fromarray(np.full((32, 32), 0.5, np.float32)), "TIFF"),
        (128, 128, 128),
    )
    out["rgb.jpg"] = (png_bytes(solid((40, 90, 200)), "JPEG", quality=100), (40, 90, 200))
    out["one_bit.png"] = (png_bytes(PIL.Image.new("1", (32, 32), 1)), (255, 255, 255))
    return out


def test_every_mode_becomes_the_right_rgb(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    cases = mode_images()
    for name, (data, _) in cases.items():
        (src / name).write_bytes(data)
    report = prepare_dataset(src, tmp_path / "out.zip", R, limits=LIMITS)
    assert report.rejected == []
    assert report.accepted == len(cases)
    images = read_zip_images(tmp_path / "out.zip")
    for i, name in enumerate(sorted(cases)):  # outputs follow the sorted source names
        img = images[archive_name(i)]
        assert img.shape == (R, R, 3) and img.dtype == np.uint8
        want = np.array(cases[name][1])
        tol = 3 if name.endswith(".jpg") else 1  # JPEG chroma rounding; others exact up to the 8-bit scaling
        assert np.abs(img.astype(int) - want).max() <= tol, name


def test_pa_and_16bit_ramps_in_memory() -> None:
    pa = PIL.Image.new("RGBA", (4, 4), (10, 20, 30, 255)).convert("PA")
    assert pa.mode == "PA"
    assert to_rgb(pa).getpixel((0, 0)) == (10, 20, 30)
    ramp = np.linspace(0, 65535, 16).astype(np.uint16).reshape(4, 4)
    out = np.array(to_rgb(PIL.Image.fromarray(ramp)))[..., 0]
    # Scaled, not clipped: the ramp spans the whole 8-bit range and stays monotone.
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)
    assert to_rgb(PIL.Image.new("RGBA", (2, 2), (0, 0, 0, 0)), background=(1, 2, 3)).getpixel((0, 0)) == (
        1,
        2,
        3,
    )


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 64 wide x 32 tall, red on the left half; EXIF 6 = "rotate 90 degrees clockwise to display":
    # displayed it is 32 wide x 64 tall with red on the top half.
    a = np.zeros((32, 64, 3), np.uint8)
    a[:, :32] = (255, 0, 0)
    a[:, 32:] = (0, 0, 255)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    src = tmp_path / "src"
    src.mkdir()
    (src / "rot.jpg").write_bytes(png_bytes(PIL.Image.fromarray(a), "JPEG", exif=exif.tobytes(), quality=100))
    prepare_dataset(src, tmp_path / "out.zip", R, transform="pad", limits=LIMITS, background=(0, 0, 0))
    img = read_zip_images(tmp_path / "out.zip")[archive_name(0)].astype(int)
    top, bottom = img[2, R // 2], img[R - 3, R // 2]  # the padded image keeps all of the picture
    assert top[0] > 200 and top[2] < 50
    assert bottom[2] > 200 and bottom[0] < 50


# -- transforms ---------------------------------------------------------------------------------------


def striped(width: int, height: int) -> PIL.Image.Image:
    """Red outer quarters (left and right), green middle half."""
    a = np.zeros((height, width, 3), np.uint8)
    a[:, :] = (255, 0, 0)
    a[:, width // 4 : 3 * width // 4] = (0, 255, 0)
    return PIL.Image.fromarray(a)


@pytest.mark.parametrize("transform", ["center-crop", "center-crop-wide", "pad"])
def test_transforms(tmp_path: Path, transform: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "wide.png").write_bytes(png_bytes(striped(128, 64)))
    prepare_dataset(src, tmp_path / "o.zip", 32, transform=transform, limits=LIMITS, background=(0, 0, 255))  # type: ignore[arg-type]
    img = read_zip_images(tmp_path / "o.zip")[archive_name(0)].astype(int)
    assert img.shape == (32, 32, 3)
    if transform == "center-crop":
        # The centred 64x64 square is the green half: the whole output is green (LANCZOS ringing aside).
        assert (img[:, 2:-2, 1] > 240).all() and (img[:, 2:-2, 0] < 15).all()
    elif transform == "pad":
        # Full width kept; the 2:1 image sits between bands of the stated background (blue).
        assert (img[:6, :, 2] > 240).all() and (img[-6:, :, 2] > 240).all()
        assert img[16, 2, 0] > 240 and img[16, 16, 1] > 240
    else:
        # Full width kept, letterboxed on black as the official LSUN setup.
        assert (img[:6] < 15).all() and (img[-6:] < 15).all()
        assert img[16, 2, 0] > 240 and img[16, 16, 1] > 240


def test_bad_arguments_fail_early(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        prepare_dataset(tmp_path, tmp_path / "o.zip", 24)
    with pytest.raises(ConfigError):
        prepare_dataset(tmp_path, tmp_path / "o.tar", 16)
    with pytest.raises(ConfigError):
        prepare_dataset(tmp_path, tmp_path / "o.zip", 16, transform="stretch")  # type: ignore[arg-type]


# -- labels -------------------------------------------------------------------------------------------


def read_labels_officially(path: Path) -> dict[str, object]:
    """What NVIDIA's training/dataset.py does with our zip: sorted image names, dict(labels)."""
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if os.path.splitext(n)[1].lower() in PIL.Image.EXTENSION)
        labels = json.loads(z.read("dataset.json"))["labels"]
    table = dict(labels)
    return {n: table[n] for n in names}


def test_labels_dict_file_and_official_forms(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name, rgb in [("a.png", (255, 0, 0)), ("b.png", (0, 255, 0)), ("sub/c.png", (0, 0, 255))]:
        (src / name).write_bytes(png_bytes(solid(rgb)))
    want = {"a.png": 2, "b.png": 0, "sub/c.png": 1}

    report = prepare_dataset(src, tmp_path / "d.zip", R, labels={**want, "ghost.png": 1}, limits=LIMITS)
    assert report.labeled and report.accepted == 3 and report.unknown_labels == ["ghost.png"]
    got = read_labels_officially(tmp_path / "d.zip")
    assert list(got.values()) == [2, 0, 1]
    with zipfile.ZipFile(tmp_path / "d.zip") as z:
        meta = json.loads(z.read("dataset.json"))
    assert meta == {"labels": [[archive_name(i), v] for i, v in enumerate([2, 0, 1])]}

    # A labels file, keyed by bare file names, and the official dataset.json form give the same.
    (tmp_path / "names.json").write_text(json.dumps({"a.png": 2, "b.png": 0, "c.png": 1}))
    prepare_dataset(src, tmp_path / "f.zip", R, labels=tmp_path / "names.json", limits=LIMITS)
    assert read_labels_officially(tmp_path / "f.zip") == got
    (tmp_path / "official.json").write_text(json.dumps({"labels": [[k, v] for k, v in want.items()]}))
    prepare_dataset(src, tmp_path / "o.zip", R, labels=tmp_path / "official.json", limits=LIMITS)
    assert read_labels_officially(tmp_path / "o.zip") == got

    # The reader turns them into one-hot vectors in the same order.
    ds = ImageDataset(tmp_path / "d.zip", use_labels=True)
    assert ds.has_labels and ds.label_dim == 3
    assert [int(np.argmax(ds[i][1])) for i in range(3)] == [2, 0, 1]
    assert [int(ds[i][0][0, 0, 0]) for i in range(3)] == [255, 0, 0]  # a.png is red, first

    # A dataset.json already in the source is used when no labels are given, as the official tool does.
    (src / "dataset.json").write_text(json.dumps({"labels": [[k, v] for k, v in want.items()]}))
    prepare_dataset(src, tmp_path / "s.zip", R, limits=LIMITS)
    assert read_labels_officially(tmp_path / "s.zip") == got


def test_unlabeled_images_are_rejected_when_labels_are_given(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(png_bytes(solid((1, 2, 3))))
    (src / "b.png").write_bytes(png_bytes(solid((1, 2, 3))))
    report = prepare_dataset(src, tmp_path / "o.zip", R, labels={"a.png": 0}, limits=LIMITS)
    assert report.accepted == 1
    assert [(r.name, r.reason) for r in report.rejected] == [("b.png", UNLABELED)]


def test_reader_matches_official_semantics(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        a = np.zeros((32, 32, 3), np.uint8)
        a[:, :16] = i * 40  # left half encodes the index, right half black
        (src / f"{i}.png").write_bytes(png_bytes(PIL.Image.fromarray(a)))
    prepare_dataset(src, tmp_path / "d.zip", R, limits=LIMITS)
    ds = ImageDataset(tmp_path / "d.zip", resolution=R, xflip=True, max_size=3)
    assert len(ds) == 6 and ds.num_channels == 3 and ds.resolution == R and not ds.has_labels
    assert ds.label_dim == 0 and ds[0][1].shape == (0,)
    kept = [int(ds[i][0][0, 0, 0]) for i in range(3)]
    assert kept == sorted(kept) and len(set(kept)) == 3  # a sorted random subset, as official
    for i in range(3):
        img, flipped = ds[i][0], ds[i + 3][0]
        np.testing.assert_array_equal(flipped, img[:, :, ::-1])
    with pytest.raises(Exception, match="expected 32"):
        ImageDataset(tmp_path / "d.zip", resolution=32)


# -- bad and hostile inputs ---------------------------------------------------------------------------


def test_bad_files_are_rejected_with_reasons(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    good = png_bytes(solid((9, 9, 9)))
    noise = PIL.Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    jpeg = png_bytes(noise, "JPEG", quality=95)  # mostly scan data, so half of it keeps the headers
    (src / "good.png").write_bytes(good)
    (src / "notes.png").write_bytes(b"this is not a picture")
    (src / "readme.txt").write_text("hello")
    (src / "cut.png").write_bytes(
        png_bytes(
            PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        )[:2000]
    )
    (src / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (src / "tiny.png").write_bytes(png_bytes(solid((1, 1, 1), (8, 40))))
    (src / "bomb.png").write_bytes(huge_png(20000, 20000))  # 400 Mpx declared in 60 bytes
    (src / "link.png").symlink_to(src / "good.png")
    (src / "linkdir").symlink_to(tmp_path)
    before = tree(tmp_path)
    report = prepare_dataset(src, tmp_path / "out" / "o.zip", R, limits=LIMITS)
    assert report.accepted == 1
    got = {r.name: r.reason for r in report.rejected}
    assert got == {
        "notes.png": NOT_AN_IMAGE,
        "readme.txt": NOT_AN_IMAGE,
        "cut.png": TRUNCATED,
        "cut.jpg": TRUNCATED,
        "tiny.png": TOO_SMALL,
        "bomb.png": BOMB,
        "link.png": SYMLINK,
        "linkdir": SYMLINK,
    }
    assert tree(tmp_path) - before == {"out", "out/o.zip"}


def test_pixel_limit_below_pillows_is_a_bomb(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.png").write_bytes(png_bytes(solid((5, 5, 5), (64, 64))))
    (src / "ok.png").write_bytes(png_bytes(solid((5, 5, 5), (32, 32))))
    report = prepare_dataset(
        src, tmp_path / "o.zip", R, limits=PrepareLimits(min_side=16, max_image_pixels=2000)
    )
    assert [(r.name, r.reason) for r in report.rejected] == [("big.png", BOMB)]


def malicious_zip(path: Path) -> None:
    good = png_bytes(solid((200, 100, 50)))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ok/good.png", good)
        z.writestr("../evil.png", good)
        z.writestr("ok/../../evil2.png", good)
        z.writestr("/abs.png", good)
        link = zipfile.ZipInfo("ok/link.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
        z.writestr("ok/zeros.png", b"\0" * 2_000_000, compress_type=zipfile.ZIP_DEFLATED)


def test_zip_entries_that_escape_or_link_are_rejected(tmp_path: Path) -> None:
    malicious_zip(tmp_path / "in.zip")
    work = tmp_path / "work"
    work.mkdir()
    before = tree(tmp_path)
    report = prepare_dataset(tmp_path / "in.zip", work / "o.zip", R, limits=LIMITS)
    assert report.accepted == 1
    assert {r.name: r.reason for r in report.rejected} == {
        "../evil.png": UNSAFE_PATH,
        "ok/../../evil2.png": UNSAFE_PATH,
        "/abs.png": UNSAFE_PATH,
        "ok/link.png": SYMLINK,
        "ok/zeros.png": COMPRESSION_RATIO,  # 2 MB of zeros deflate ~1000:1
    }
    assert tree(tmp_path) - before == {"work/o.zip"}
    assert read_zip_images(work / "o.zip")[archive_name(0)][0, 0].tolist() == [200, 100, 50]


def test_file_count_and_byte_limits(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = png_bytes(solid((3, 3, 3)))
    for i in range(4):
        (src / f"{i}.png").write_bytes(data)
    report = prepare_dataset(src, tmp_path / "o.zip", R, limits=PrepareLimits(min_side=16, max_files=3))
    assert report.accepted == 3 and [(r.name, r.reason) for r in report.rejected] == [
        ("3.png", TOO_MANY_FILES)
    ]
    limits = PrepareLimits(min_side=16, max_total_bytes=2 * len(data))
    report = prepare_dataset(src, tmp_path / "p.zip", R, limits=limits)
    assert report.accepted == 2 and {r.reason for r in report.rejected} == {TOO_LARGE}


def test_nothing_usable_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(b"nope")
    before = tree(tmp_path)
    with pytest.raises(NoUsableImagesError, match="1 not an image") as info:
        prepare_dataset(src, tmp_path / "o.zip", R, limits=LIMITS)
    assert info.value.report.rejected[0].reason == NOT_AN_IMAGE
    assert tree(tmp_path) == before  # no zip, no temporary file left behind


def test_progress_callback_and_atomic_replace(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.png").write_bytes(png_bytes(solid((i, i, i))))
    (tmp_path / "o.zip").write_bytes(b"old")
    calls: list[tuple[int, int]] = []
    prepare_dataset(src, tmp_path / "o.zip", R, limits=LIMITS, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert len(ImageDataset(tmp_path / "o.zip")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zip", "src"]


# -- command line -------------------------------------------------------------------------------------


def test_cli_prepare_prints_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    malicious_zip(tmp_path / "in.zip")
    argv = ["dataset", "prepare", "--source", str(tmp_path / "in.zip"), "--dest", str(tmp_path / "o.zip")]
    rc = main([*argv, "--resolution", "16", "--min-side", "16", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "rejected ../evil.png: unsafe path" in out and "rejected ok/link.png: symlink" in out
    assert "1 images (unlabeled, 16x16)" in out

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.png").write_bytes(b"x")
    rc = main(
        [
            "dataset",
            "prepare",
            "--source",
            str(tmp_path / "junk"),
            "--dest",
            str(tmp_path / "j.zip"),
            "--resolution",
            "16",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no usable images" in err
    assert not (tmp_path / "j.zip").exists()
