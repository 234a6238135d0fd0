"""Procedural cartoon faces: the training set of the bundled demo model.

Every face is drawn from its own random stream, `np.random.default_rng([seed, index])`, so image i is
the same whatever N is and on every machine: face shape and size, skin tone, ears, hair style and
colour, eyes (spacing, size, iris colour, blinking), brows (tilt, thickness), nose, mouth (smile, open,
flat), cheeks and a two-tone background. Faces are drawn at 4x and reduced with LANCZOS, which gives
smooth anti-aliased edges (a GAN learns hard aliased edges poorly).

    python scripts/make_cartoon_faces.py --out faces.zip --count 5000 --resolution 64 --seed 0

A `.zip` output is a training set in the official layout (`00000/img00000000.png`, `dataset.json`),
ready for `stylegan train --data`; any other path is a folder of PNGs for `stylegan dataset prepare`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 4
SKIN_TONES = [(255, 224, 196), (241, 194, 155), (224, 172, 125), (198, 134, 86), (141, 85, 54), (92, 58, 38)]
HAIR_COLOURS = [
    (20, 18, 18),
    (70, 45, 30),
    (120, 80, 40),
    (200, 160, 90),
    (230, 210, 150),
    (170, 60, 30),
    (140, 140, 150),
    (60, 90, 200),
]
IRIS_COLOURS = [(60, 40, 20), (40, 90, 160), (50, 120, 60), (100, 100, 110)]
HAIR_STYLES = ("bald", "short", "long", "spiky", "bun", "fringe")
MOUTHS = ("smile", "open", "flat", "grin")


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)
    return (r, g, b)


def _pick(rng: np.random.Generator, items: list | tuple) -> object:  # type: ignore[type-arg]
    return items[int(rng.integers(len(items)))]


def draw_face(rng: np.random.Generator, resolution: int) -> Image.Image:
    s = resolution * SUPERSAMPLE
    u = s / 64  # drawing unit: the layout is designed on a 64-unit square

    top = tuple(int(c) for c in rng.integers(40, 230, 3))
    bottom = _jitter(top, rng, 50)  # type: ignore[arg-type]
    ramp = np.linspace(0, 1, s)[:, None, None]
    bg = (np.array(top)[None, None] * (1 - ramp) + np.array(bottom)[None, None] * ramp).repeat(s, axis=1)
    img = Image.fromarray(bg.astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)

    cx = 32 + rng.normal(0, 1.5)
    cy = 34 + rng.normal(0, 1.5)
    fw = rng.uniform(17, 23)  # half-width of the face
    fh = fw * rng.uniform(1.05, 1.35)
    skin = _jitter(_pick(rng, SKIN_TONES), rng, 8)  # type: ignore[arg-type]
    hair = _jitter(_pick(rng, HAIR_COLOURS), rng, 10)  # type: ignore[arg-type]
    style = _pick(rng, HAIR_STYLES)
    line = tuple(max(0, c - 90) for c in skin)

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [x0 * u, y0 * u, x1 * u, y1 * u]

    if style in ("long",):  # hair behind the face
        d.rounded_rectangle(
            box(cx - fw - 4, cy - fh - 3, cx + fw + 4, cy + fh * 0.9), radius=12 * u, fill=hair
        )
    if style == "bun":
        d.ellipse(box(cx - 7, cy - fh - 12, cx + 7, cy - fh + 1), fill=hair)

    ear = rng.uniform(3, 5)
    for side in (-1, 1):
        ex = cx + side * fw
        d.ellipse(
            box(ex - ear, cy - ear * 1.3, ex + ear, cy + ear * 1.3), fill=skin, outline=line, width=int(u)
        )
    d.ellipse(box(cx - fw, cy - fh, cx + fw, cy + fh), fill=skin, outline=line, width=int(u))

    # Hair on top of the head.
    if style in ("short", "long", "bun", "fringe"):
        depth = rng.uniform(0.25, 0.55) * fh
        d.chord(box(cx - fw - 1, cy - fh - 2, cx + fw + 1, cy - fh + 2 * depth + 4), 180, 360, fill=hair)
        if style == "fringe":
            d.rectangle(box(cx - fw * 0.8, cy - fh + depth, cx + fw * 0.8, cy - fh + depth + 4), fill=hair)
    elif style == "spiky":
        spikes = int(rng.integers(4, 8))
        xs = np.linspace(cx - fw, cx + fw, spikes + 1)
        for a, b in zip(xs[:-1], xs[1:], strict=True):
            tip = cy - fh - rng.uniform(4, 9)
            d.polygon(
                [(a * u, (cy - fh * 0.55) * u), (b * u, (cy - fh * 0.55) * u), ((a + b) / 2 * u, tip * u)],
                fill=hair,
            )
        d.chord(box(cx - fw, cy - fh, cx + fw, cy - fh * 0.1), 180, 360, fill=hair)

    # Eyes, brows.
    spacing = rng.uniform(0.32, 0.48) * fw
    ey = cy - fh * rng.uniform(0.05, 0.2)
    er = rng.uniform(2.2, 3.6)
    iris = _pick(rng, IRIS_COLOURS)
    blink = rng.random() < 0.1
    tilt = rng.uniform(-2, 2)
    brow_w = max(1, int(rng.uniform(0.8, 1.8) * u))
    for side in (-1, 1):
        ex = cx + side * spacing
        if blink:
            d.arc(box(ex - er, ey - er, ex + er, ey + er), 20, 160, fill=(30, 20, 20), width=max(1, int(u)))
        else:
            d.ellipse(
                box(ex - er, ey - er * 1.1, ex + er, ey + er * 1.1),
                fill=(250, 250, 250),
                outline=(30, 20, 20),
                width=max(1, int(u * 0.6)),
            )
            ir = er * 0.6
            dx = rng.uniform(-0.6, 0.6)
            d.ellipse(box(ex - ir + dx, ey - ir, ex + ir + dx, ey + ir), fill=iris)
            d.ellipse(
                box(ex - ir * 0.45 + dx, ey - ir * 0.45, ex + ir * 0.45 + dx, ey + ir * 0.45),
                fill=(10, 10, 10),
            )
        by = ey - er * 1.1 - rng.uniform(1.5, 3)
        inner, outer = ex - side * er * 1.1, ex + side * er * 1.1
        d.line([(inner * u, (by + tilt) * u), (outer * u, (by - tilt) * u)], fill=hair, width=brow_w)

    # Nose and cheeks.
    ny = cy + fh * rng.uniform(0.1, 0.25)
    d.arc(box(cx - 1.5, ny - 2, cx + 1.5, ny + 1.5), 0, 180, fill=line, width=max(1, int(u * 0.8)))
    if rng.random() < 0.4:
        blush = _jitter((240, 130, 130), rng, 15)
        for side in (-1, 1):
            bx = cx + side * fw * 0.6
            d.ellipse(box(bx - 2.5, ny - 1, bx + 2.5, ny + 2), fill=blush)

    # Mouth.
    my = cy + fh * rng.uniform(0.45, 0.6)
    mw = fw * rng.uniform(0.3, 0.55)
    mouth = _pick(rng, MOUTHS)
    lips = (150, 40, 50)
    if mouth == "smile":
        d.arc(
            box(cx - mw, my - mw * 0.6, cx + mw, my + mw * 0.4),
            20,
            160,
            fill=lips,
            width=max(1, int(u * 1.2)),
        )
    elif mouth == "open":
        d.ellipse(
            box(cx - mw * 0.5, my - 1.5, cx + mw * 0.5, my + 3),
            fill=(90, 20, 30),
            outline=lips,
            width=max(1, int(u * 0.8)),
        )
    elif mouth == "grin":
        d.chord(
            box(cx - mw, my - mw * 0.5, cx + mw, my + mw * 0.5),
            0,
            180,
            fill=(250, 250, 250),
            outline=lips,
            width=max(1, int(u)),
        )
    else:
        d.line(
            [((cx - mw * 0.7) * u, my * u), ((cx + mw * 0.7) * u, my * u)],
            fill=lips,
            width=max(1, int(u * 1.2)),
        )

    return img.resize((resolution, resolution), Image.LANCZOS)


def make_faces(out: Path, count: int, resolution: int = 64, seed: int = 0) -> Path:
    """Write `count` faces to a zip (official layout) or a folder; returns `out`."""
    if resolution not in (32, 64, 128, 256):
        raise ValueError(f"resolution must be 32, 64, 128 or 256, got {resolution}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    faces = (draw_face(np.random.default_rng([seed, i]), resolution) for i in range(count))
    if out.suffix.lower() != ".zip":
        out.mkdir(parents=True, exist_ok=True)
        for i, face in enumerate(faces):
            face.save(out / f"face{i:06d}.png")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as z:
                for i, face in enumerate(faces):
                    name = f"{i:08d}"
                    buf = io.BytesIO()
                    face.save(buf, format="png", compress_level=0)
                    z.writestr(f"{name[:5]}/img{name}.png", buf.getvalue())
                z.writestr("dataset.json", json.dumps({"labels": None}))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="a .zip (training-ready) or a folder")
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    make_faces(args.out, args.count, args.resolution, args.seed)
    print(f"{args.count} faces at {args.resolution}px -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
