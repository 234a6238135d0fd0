"""Turn a folder or zip of arbitrary user images into a training set in the official layout.

The output is what NVIDIA's `dataset_tool.py` writes, so both ways work (their trainer reads ours and
ours reads theirs): a zip of PNGs named `00000/img00000000.png`, `00000/img00000001.png`, ... (1000 per
folder is not used officially: the folder is the first five digits of the eight-digit index) and a
`dataset.json` holding `{"labels": [["00000/img00000000.png", 3], ...]}` or `{"labels": null}`.

The input is untrusted (the service's upload path calls `prepare_dataset`), so every file is judged on
its own and a bad one is reported with its reason instead of failing the whole set: names that would
escape a folder, symlinks, archive bombs, decompression bombs, files that are not images, truncated
images and images too small to be worth upsampling. Nothing is ever extracted to disk; the result is
written to a temporary file beside `dest` and renamed over it only when complete.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import stat
import struct
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import PIL.Image
import PIL.ImageOps

from gan.errors import ConfigError, FormatError, GanError

Transform = Literal["center-crop", "center-crop-wide", "pad"]
TRANSFORMS: tuple[Transform, ...] = ("center-crop", "center-crop-wide", "pad")
Label = int | list[float]
ProgressFn = Callable[[int, int], None]  # (files done, files total)

# Rejection reasons: a fixed vocabulary, so callers (the service, tests) can match on them; the
# `detail` beside each says the particulars.
NOT_AN_IMAGE = "not an image"
TRUNCATED = "truncated"
CORRUPT = "corrupt image"
TOO_SMALL = "too small"
BOMB = "decompression bomb"
UNSAFE_PATH = "unsafe path"
SYMLINK = "symlink"
TOO_MANY_FILES = "too many files"
TOO_LARGE = "too large"
COMPRESSION_RATIO = "compression ratio"
UNSUPPORTED_PIXELS = "unsupported pixel format"
UNLABELED = "no label"
DAMAGED = "damaged archive entry"

METADATA_NAME = "dataset.json"


@dataclass(frozen=True)
class PrepareLimits:
    """What one source may hold. The service passes its own; these defaults suit a local CLI run."""

    max_files: int = 100_000  # entries considered; later ones are rejected
    max_total_bytes: int = 20 * 2**30  # uncompressed bytes over all entries
    max_file_bytes: int = 256 * 2**20  # one entry, uncompressed
    max_compression_ratio: float = 200.0  # per zip entry; PNG/JPEG barely compress, bombs reach 1000+
    max_image_pixels: int = PIL.Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's own bomb limit
    min_side: int = 32  # shorter side after cropping; below this upsampling only invents blur

    def __post_init__(self) -> None:
        for name in ("max_files", "max_total_bytes", "max_file_bytes", "max_image_pixels", "min_side"):
            if getattr(self, name) < 1:
                raise ConfigError(f"limits.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_compression_ratio < 1:
            raise ConfigError(f"limits.max_compression_ratio must be >= 1, got {self.max_compression_ratio}")


@dataclass(frozen=True)
class Rejection:
    name: str  # the file's path inside the source, '/'-separated
    reason: str  # one of the reason constants above
    detail: str = ""


@dataclass
class PrepareReport:
    dest: Path
    resolution: int
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    unknown_labels: list[str] = field(default_factory=list)  # names in the labels file matching no file
    labeled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "dest": str(self.dest),
            "resolution": self.resolution,
            "accepted": self.accepted,
            "rejected": [{"name": r.name, "reason": r.reason, "detail": r.detail} for r in self.rejected],
            "unknown_labels": list(self.unknown_labels),
            "labeled": self.labeled,
        }


def rejection_list(rejected: list[Rejection], max_entries: int, max_chars: int) -> list[dict[str, str]]:
    """The first `max_entries` rejections as JSON-able dicts, each name and detail cut to `max_chars`
    (marked with "..."): a report is kept and sent back many times, and a hostile upload can hold
    100,000 files with 64 KB names. The caller keeps the full count beside it."""

    def cut(text: str) -> str:
        return text if len(text) <= max_chars else text[: max(max_chars - 3, 0)] + "..."

    return [
        {"name": cut(r.name), "reason": r.reason, "detail": cut(r.detail)} for r in rejected[:max_entries]
    ]


class NoUsableImagesError(GanError):
    """Every file of the source was rejected; `report` lists why, and nothing was written."""

    def __init__(self, message: str, report: PrepareReport) -> None:
        super().__init__(message)
        self.report = report


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def archive_name(index: int) -> str:
    """The official name of the index-th image: the folder is the first five of eight digits."""
    s = f"{index:08d}"
    return f"{s[:5]}/img{s}.png"


# ---------------------------------------------------------------------------------------------------
# Sources: a folder or a zip, walked without following links or extracting anything.


@dataclass(frozen=True)
class _Entry:
    name: str
    size: int  # uncompressed bytes (declared, for zips; zipfile stops reading there)
    compressed: int
    read: Callable[[], bytes]
    refuse: tuple[str, str] | None = None  # (reason, detail) known before reading


def _unsafe_name(name: str) -> str | None:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "path contains '..'"
    if "\x00" in name:
        return "NUL in name"
    return None


def _zip_entries(zf: zipfile.ZipFile) -> Iterator[_Entry]:
    for info in sorted(zf.infolist(), key=lambda i: i.filename):
        if info.is_dir():
            continue
        mode = info.external_attr >> 16
        refuse = None
        why = _unsafe_name(info.filename)
        if why is not None:
            refuse = (UNSAFE_PATH, why)
        elif info.create_system == 3 and stat.S_ISLNK(mode):  # made on Unix: mode bits are meaningful
            refuse = (SYMLINK, "zip entry is a symbolic link")
        yield _Entry(
            info.filename,
            info.file_size,
            info.compress_size,
            lambda info=info: zf.read(info),  # type: ignore[misc]
            refuse,
        )


def _dir_entries(root: Path) -> Iterator[_Entry]:
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        # A linked folder is reported once as a symlink and never walked into.
        for d in list(dirnames):
            if (base / d).is_symlink():
                found.append(((base / d).relative_to(root).as_posix(), base / d))
                dirnames.remove(d)
        found.extend(((base / f).relative_to(root).as_posix(), base / f) for f in filenames)
    for name, p in sorted(found):
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            yield _Entry(name, 0, 0, lambda: b"", (SYMLINK, "symbolic link not followed"))
        elif not stat.S_ISREG(st.st_mode):
            yield _Entry(name, 0, 0, lambda: b"", (NOT_AN_IMAGE, "not a regular file"))
        else:
            yield _Entry(name, st.st_size, st.st_size, lambda p=p: p.read_bytes())  # type: ignore[misc]


def _read_entry(entry: _Entry) -> bytes:
    """The entry's bytes; a zip entry whose data does not match its header (a bad CRC, a declared size
    that lies either way, a broken deflate stream, an unsupported method or encryption) is rejected with
    zipfile's reason. zipfile stops at the declared size, so a lying size cannot make it read more."""
    try:
        data = entry.read()
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise _Rejected(DAMAGED, str(exc) or type(exc).__name__) from exc
    except OSError as exc:
        raise _Rejected(DAMAGED, f"unreadable: {exc}") from exc
    if len(data) != entry.size:
        raise _Rejected(DAMAGED, f"{len(data)} bytes where the archive declares {entry.size}")
    return data


# ---------------------------------------------------------------------------------------------------
# Decoding: any Pillow mode to 8-bit RGB.


def to_rgb(img: PIL.Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> PIL.Image.Image:
    """Convert any single-frame Pillow image to 8-bit RGB.

    Alpha is composited over `background` (white by default: the usual page colour behind
    transparent drawings and product shots). 16-bit and 32-bit integer greys are scaled by 255/65535
    rather than clipped (Pillow's own `convert` clips I;16 at 255, which turns most photos white);
    float images must lie in [0, 1].
    """
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise _Rejected(UNSUPPORTED_PIXELS, f"{mode} values outside [0, 65535]")
        img = PIL.Image.fromarray(np.round(a * (255 / 65535)).astype(np.uint8), "L")
    elif mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if a.size and not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
            raise _Rejected(UNSUPPORTED_PIXELS, "float values outside [0, 1]")
        img = PIL.Image.fromarray(np.round(a * 255).astype(np.uint8), "L")
    if img.mode in ("LA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        canvas = PIL.Image.new("RGB", img.size, background)
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    if img.mode != "RGB":
        try:
            img = img.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV, RGBX
        except (ValueError, OSError) as exc:
            raise _Rejected(UNSUPPORTED_PIXELS, f"cannot convert mode {img.mode}: {exc}") from exc
    return img


def _decode(data: bytes, limits: PrepareLimits, background: tuple[int, int, int]) -> PIL.Image.Image:
    with warnings.catch_warnings():
        # Pillow warns above MAX_IMAGE_PIXELS and raises only at twice that; the warning is our limit.
        warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
        try:
            img: PIL.Image.Image = PIL.Image.open(io.BytesIO(data))
        except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as exc:
            raise _Rejected(BOMB, str(exc)) from exc
        except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise _Rejected(NOT_AN_IMAGE, "Pillow cannot identify it") from exc
        w, h = img.size
        if w * h > limits.max_image_pixels:
            raise _Rejected(BOMB, f"{w}x{h} = {w * h} pixels, limit {limits.max_image_pixels}")
        try:
            img.load()
            img = PIL.ImageOps.exif_transpose(img)
        except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as exc:
            raise _Rejected(BOMB, str(exc)) from exc
        except OSError as exc:
            if "truncated" in str(exc).lower():
                raise _Rejected(TRUNCATED, str(exc)) from exc
            raise _Rejected(CORRUPT, str(exc)) from exc
        except (SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise _Rejected(CORRUPT, str(exc)) from exc
    return to_rgb(img, background)


# ---------------------------------------------------------------------------------------------------
# Geometry: crop or pad to a square, then one LANCZOS resize.


def _square(
    img: PIL.Image.Image,
    resolution: int,
    transform: Transform,
    min_side: int,
    background: tuple[int, int, int],
) -> PIL.Image.Image:
    w, h = img.size
    if transform == "center-crop":
        # As dataset_tool.py's center_crop: the largest centred square, then resize.
        s = min(w, h)
        if s < min_side:
            raise _Rejected(TOO_SMALL, f"{w}x{h}; the shorter side must be at least {min_side} px")
        left, top = (w - s) // 2, (h - s) // 2
        return img.crop((left, top, left + s, top + s)).resize(
            (resolution, resolution), PIL.Image.Resampling.LANCZOS
        )
    if transform == "pad":
        s = max(w, h)
        if min(w, h) < min_side:
            raise _Rejected(TOO_SMALL, f"{w}x{h}; the shorter side must be at least {min_side} px")
        canvas = PIL.Image.new("RGB", (s, s), background)
        canvas.paste(img, ((s - w) // 2, (s - h) // 2))
        return canvas.resize((resolution, resolution), PIL.Image.Resampling.LANCZOS)
    # center-crop-wide, as dataset_tool.py's LSUN setup (--resolution=WxH on wide images): the full width
    # scaled to `resolution`, letterboxed on a black square canvas; a band taller than the square is
    # centre-cropped to it, so portraits come out as with center-crop.
    if w < min_side:
        raise _Rejected(TOO_SMALL, f"{w}x{h}; the width must be at least {min_side} px")
    band = int(np.round(resolution * h / w))
    if band < 1:
        raise _Rejected(TOO_SMALL, f"{w}x{h} is too wide to keep a row at {resolution} px")
    if band >= resolution:
        s = w
        top = (h - s) // 2
        return img.crop((0, top, w, top + s)).resize((resolution, resolution), PIL.Image.Resampling.LANCZOS)
    strip = img.resize((resolution, band), PIL.Image.Resampling.LANCZOS)
    canvas = PIL.Image.new("RGB", (resolution, resolution), (0, 0, 0))
    canvas.paste(strip, (0, (resolution - band) // 2))
    return canvas


# ---------------------------------------------------------------------------------------------------
# Labels.


def _parse_labels(labels: dict[str, Any] | Path | str | None) -> dict[str, Label] | None:
    if labels is None:
        return None
    if isinstance(labels, str | Path):
        try:
            labels = json.loads(Path(labels).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise FormatError(f"labels file {labels} is not JSON: {exc}") from exc
    if isinstance(labels, dict) and set(labels) == {"labels"}:  # the official dataset.json form
        inner = labels["labels"]
        if inner is None:
            return None
        if not isinstance(inner, list) or not all(isinstance(x, list) and len(x) == 2 for x in inner):
            raise FormatError('dataset.json "labels" must be a list of [name, label] pairs or null')
        labels = {str(n): v for n, v in inner}
    if not isinstance(labels, dict):
        raise FormatError("labels must map file names to class indices")
    out: dict[str, Label] = {}
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int | list):
            raise FormatError(f"label of {name!r} must be a class index or a list of numbers, got {value!r}")
        if isinstance(value, int) and value < 0:
            raise FormatError(f"label of {name!r} must be >= 0, got {value}")
        if isinstance(value, list) and not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            raise FormatError(f"label of {name!r} must be a list of numbers, got {value!r}")
        out[str(name).replace("\\", "/")] = value
    kinds = {type(v) for v in out.values()}
    if len(kinds) > 1:
        raise FormatError("labels mix class indices and vectors")
    if list in kinds and len({len(v) for v in out.values() if isinstance(v, list)}) > 1:
        raise FormatError("label vectors differ in length")
    return out


def _lookup(labels: dict[str, Label], name: str, basenames: dict[str, str]) -> str | None:
    if name in labels:
        return name
    key = basenames.get(posixpath.basename(name))
    return key


# ---------------------------------------------------------------------------------------------------


def prepare_dataset(
    source: Path | str,
    dest: Path | str,
    resolution: int,
    transform: Transform = "center-crop",
    labels: dict[str, Any] | Path | str | None = None,
    progress: ProgressFn | None = None,
    limits: PrepareLimits = PrepareLimits(),
    background: tuple[int, int, int] = (255, 255, 255),
    compress_level: int = 0,
) -> PrepareReport:
    """Decode, orient, convert, square and resize every image of `source` into the zip `dest`.

    `labels` maps a file's path inside the source (or its bare file name) to a class index, or is the
    official `{"labels": [[name, label], ...]}`; when absent, a `dataset.json` in the source is used as
    the official tool does. With labels, an image without one is rejected. `compress_level` 0 writes
    uncompressed PNGs as the official tool does: they decode several times faster during training.
    Raises `NoUsableImagesError` (with the report) when nothing is accepted; then nothing is written.
    """
    source, dest = Path(source), Path(dest)
    if transform not in TRANSFORMS:
        raise ConfigError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    if resolution < 4 or resolution & (resolution - 1):
        raise ConfigError(f"resolution must be a power of two >= 4, got {resolution}")
    if dest.suffix.lower() != ".zip":
        raise ConfigError(f"dest must be a .zip file, got {dest}")
    if not source.exists():
        raise FileNotFoundError(2, "No such file or directory", str(source))
    report = PrepareReport(dest=dest, resolution=resolution)

    zf: zipfile.ZipFile | None = None
    if source.is_dir():
        entries = list(_dir_entries(source))
    else:
        try:
            zf = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError) as exc:
            raise FormatError(f"{source} is neither a folder nor a readable zip: {exc}") from exc
        entries = list(_zip_entries(zf))
    try:
        label_map = _parse_labels(labels)
        meta = next((e for e in entries if e.name == METADATA_NAME and e.refuse is None), None)
        if meta is not None:
            entries.remove(meta)
            if label_map is None and labels is None and meta.size <= limits.max_file_bytes:
                try:
                    label_map = _parse_labels(json.loads(_read_entry(meta)))
                except _Rejected as r:
                    raise FormatError(f"{METADATA_NAME} in {source}: {r.reason}: {r.detail}") from r
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise FormatError(f"{METADATA_NAME} in {source} is not JSON: {exc}") from exc
        report.labeled = label_map is not None
        return _convert(
            entries,
            label_map,
            dest,
            resolution,
            transform,
            progress,
            limits,
            background,
            compress_level,
            report,
        )
    finally:
        if zf is not None:
            zf.close()


def _convert(
    entries: list[_Entry],
    label_map: dict[str, Label] | None,
    dest: Path,
    resolution: int,
    transform: Transform,
    progress: ProgressFn | None,
    limits: PrepareLimits,
    background: tuple[int, int, int],
    compress_level: int,
    report: PrepareReport,
) -> PrepareReport:
    basenames: dict[str, str] = {}
    used: set[str] = set()
    if label_map is not None:
        counts: dict[str, int] = {}
        for label_name in label_map:
            base = posixpath.basename(label_name)
            counts[base] = counts.get(base, 0) + 1
        basenames = {posixpath.basename(k): k for k in label_map if counts[posixpath.basename(k)] == 1}

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    out_labels: list[list[Any]] = []
    total_bytes = 0
    try:
        with os.fdopen(fd, "wb") as raw:
            with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as out:
                for done, entry in enumerate(entries, 1):
                    try:
                        if entry.refuse is not None:
                            raise _Rejected(*entry.refuse)
                        if done > limits.max_files:
                            raise _Rejected(
                                TOO_MANY_FILES, f"only the first {limits.max_files} files are read"
                            )
                        if entry.size > limits.max_file_bytes:
                            raise _Rejected(TOO_LARGE, f"{entry.size} bytes, limit {limits.max_file_bytes}")
                        if entry.size > limits.max_compression_ratio * max(entry.compressed, 1):
                            ratio = entry.size / max(entry.compressed, 1)
                            raise _Rejected(
                                COMPRESSION_RATIO,
                                f"{ratio:.0f}:1, limit {limits.max_compression_ratio:.0f}:1",
                            )
                        if total_bytes + entry.size > limits.max_total_bytes:
                            raise _Rejected(
                                TOO_LARGE, f"the source exceeds {limits.max_total_bytes} bytes in all"
                            )
                        total_bytes += entry.size
                        key: str | None = None
                        if label_map is not None:
                            key = _lookup(label_map, entry.name, basenames)
                        img = _decode(_read_entry(entry), limits, background)
                        img = _square(img, resolution, transform, limits.min_side, background)
                        if label_map is not None and key is None:
                            raise _Rejected(UNLABELED, "the labels give none for this file")
                    except _Rejected as r:
                        report.rejected.append(Rejection(entry.name, r.reason, r.detail))
                    else:
                        name = archive_name(report.accepted)
                        buf = io.BytesIO()
                        img.save(buf, format="png", compress_level=compress_level)
                        out.writestr(name, buf.getvalue())
                        if label_map is not None and key is not None:
                            used.add(key)
                            out_labels.append([name, label_map[key]])
                        report.accepted += 1
                    if progress is not None:
                        progress(done, len(entries))
                if label_map is not None:
                    report.unknown_labels = sorted(set(label_map) - used)
                if report.accepted == 0:
                    reasons: dict[str, int] = {}
                    for rejection in report.rejected:
                        reasons[rejection.reason] = reasons.get(rejection.reason, 0) + 1
                    summary = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
                    raise NoUsableImagesError(
                        f"no usable images: all {len(report.rejected)} files were rejected ({summary or 'the source is empty'})",
                        report,
                    )
                meta = {"labels": out_labels if label_map is not None else None}
                out.writestr(METADATA_NAME, json.dumps(meta))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return report
