"""Command group `generate` of the `stylegan` command (see gan/cli.py): `generate`, `mix` and `video`.

Thin over `gan.sampling`, `gan.mixing` and `gan.video`: parse, load the network once, call the library,
write the files. The options follow the official `gen_images.py`, `style_mixing.py` and `gen_video.py`.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from gan.vocabulary import NOISE_MODES

if TYPE_CHECKING:
    import numpy as np

    from gan.editing import Edit, Sweep
    from gan.sampling import Sampler


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this group's sub-commands; each sets `handler` to a function taking the parsed args."""
    p = subparsers.add_parser(
        "generate",
        help="images from seeds",
        description="Write seedNNNN.png for each seed, as the official gen_images.py does.",
    )
    _network_options(p)
    p.add_argument("--seeds", required=True, help="seeds, e.g. 0-3,42")
    _truncation_options(p)
    p.add_argument(
        "--translate",
        help="StyleGAN3 only: translate the image by X,Y (e.g. 0.3,1; --translate=-0.3,1 if negative)",
    )
    p.add_argument("--rotate", type=float, help="StyleGAN3 only: rotate the image by DEG degrees")
    _edit_options(p)
    p.add_argument("--outdir", required=True, help="where to write the PNGs")
    p.set_defaults(handler=_generate)

    p = subparsers.add_parser(
        "mix",
        help="style-mixing grid",
        description="Copy the chosen ws from each column seed into each row seed (after truncation); "
        "write {row}-{col}.png and grid.png as the official style_mixing.py does.",
    )
    _network_options(p)
    p.add_argument("--rows", required=True, help="row seeds, e.g. 0,42")
    p.add_argument("--cols", required=True, help="column seeds, e.g. 1,7")
    p.add_argument(
        "--styles",
        default="0-6",
        help="ws indices taken from the columns (0-6, 0,1,5-7) or coarse|middle|fine",
    )
    _truncation_options(p)
    p.add_argument("--outdir", required=True, help="where to write the PNGs")
    p.set_defaults(handler=_mix)

    p = subparsers.add_parser(
        "video",
        help="latent walk through seeds",
        description="Interpolate between seeds (slerp in z, lerp in w) and write an MP4, GIF or WebP.",
    )
    _network_options(p)
    p.add_argument("--seeds", required=True, help="key seeds in walk order, e.g. 0,1,2")
    p.add_argument("--frames", type=int, default=60, help="number of frames in all (default 60)")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    p.add_argument("--space", choices=("w", "z"), default="w", help="interpolate in w (lerp) or z (slerp)")
    p.add_argument("--loop", action="store_true", help="walk back from the last seed to the first")
    _truncation_options(p)
    p.add_argument(
        "--translate",
        help="StyleGAN3 only: X0,Y0:X1,Y1 moves the image along the walk; X,Y holds it "
        "(write --translate=-1,0:1,0 when it starts with a minus)",
    )
    p.add_argument(
        "--rotate",
        help="StyleGAN3 only: DEG0:DEG1 turns the image along the walk; DEG holds it (--rotate=-30:30)",
    )
    _edit_options(p)
    p.add_argument(
        "--sweep",
        metavar="ID:START:STOP",
        help="move along a direction over the clip, strength START to STOP (e.g. sefa-all-0:-5:5); "
        "with one seed, the classic editing clip",
    )
    p.add_argument("--out", required=True, help="output file: .mp4, .gif or .webp")
    p.set_defaults(handler=_video)


def _network_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", required=True, help="official .pkl, TensorFlow .pkl or our .safetensors")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--batch", type=int, default=8, help="images per forward pass (default 8)")


def _truncation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trunc", type=float, default=1.0, help="truncation psi (default 1: none)")
    p.add_argument("--trunc-cutoff", type=int, help="truncate only the first N ws (default: all)")
    p.add_argument("--noise-mode", choices=NOISE_MODES, default="const")
    p.add_argument("--class", dest="class_idx", type=int, help="class index for a conditional model")


def _edit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--edit",
        action="append",
        default=[],
        metavar="ID:STRENGTH[@RANGE]",
        help="move the ws along a direction of --directions (repeatable; RANGE: coarse, middle, fine, all, a-b)",
    )
    p.add_argument(
        "--directions", help="directions file from `stylegan directions` (.npz) or one .npy vector"
    )


def _edits(args: argparse.Namespace, sampler: Sampler) -> list[Edit]:
    """The --edit options as edits on this model, checked (unknown ids, ranges it does not have)."""
    from gan.editing import load_directions, offsets, parse_edit, resolve_edits
    from gan.errors import GanError

    if not args.edit:
        return []
    if args.directions is None:
        raise GanError("--edit needs --directions FILE (from `stylegan directions`)")
    edits = resolve_edits([parse_edit(text) for text in args.edit], load_directions(args.directions))
    offsets(edits, sampler.config)  # refuse a range or a vector length this model does not have, now
    return edits


def _load(args: argparse.Namespace) -> Sampler:
    from gan.io.checkpoint import load_network
    from gan.sampling import Sampler, resolve_device

    device = resolve_device(args.device)  # refuse a missing CUDA before reading a large file
    return Sampler(load_network(args.network, device), device=device)


def _save_png(image: np.ndarray, path: str) -> None:
    from PIL import Image

    if image.shape[2] == 1:
        Image.fromarray(image[:, :, 0], "L").save(path)
    else:
        Image.fromarray(image, "RGB").save(path)


def _progress(total: int, desc: str):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    # disable=None: shown on a terminal, silent when stderr is a pipe or a log file.
    return tqdm(total=total, desc=desc, unit="img", disable=None)


def _generate(args: argparse.Namespace) -> int:
    from gan.errors import GanError
    from gan.sampling import parse_seeds, parse_vec2

    seeds = parse_seeds(args.seeds)
    translate = parse_vec2(args.translate) if args.translate is not None else None
    if args.batch < 1:
        raise GanError(f"--batch must be >= 1, got {args.batch}")
    sampler = _load(args)
    # Check the request against the model before creating the output directory.
    sampler.labels(1, args.class_idx)
    sampler.transform(translate, args.rotate)
    edits = _edits(args, sampler)
    os.makedirs(args.outdir, exist_ok=True)
    with _progress(len(seeds), "generate") as bar:
        for start in range(0, len(seeds), args.batch):
            chunk = seeds[start : start + args.batch]
            if edits:
                from gan.editing import apply_edits

                ws = sampler.ws_for_seeds(
                    chunk, psi=args.trunc, cutoff=args.trunc_cutoff, class_idx=args.class_idx
                )
                images = sampler.images_from_ws(
                    apply_edits(ws.cpu(), edits, sampler.config),
                    noise_mode=args.noise_mode,
                    translate=translate,
                    rotate=args.rotate,
                    noise_seeds=chunk,
                    batch_size=args.batch,
                )
            else:
                images = sampler.images(
                    chunk,
                    psi=args.trunc,
                    cutoff=args.trunc_cutoff,
                    noise_mode=args.noise_mode,
                    class_idx=args.class_idx,
                    translate=translate,
                    rotate=args.rotate,
                    batch_size=args.batch,
                )
            for seed, image in zip(chunk, images, strict=True):
                _save_png(image, os.path.join(args.outdir, f"seed{seed:04d}.png"))
            bar.update(len(chunk))
    return 0


def _mix(args: argparse.Namespace) -> int:
    from gan.errors import GanError
    from gan.mixing import mix_grid, parse_styles, style_bands, style_mix
    from gan.sampling import parse_seeds

    rows, cols = parse_seeds(args.rows), parse_seeds(args.cols)
    if args.batch < 1:
        raise GanError(f"--batch must be >= 1, got {args.batch}")
    sampler = _load(args)
    styles = parse_styles(args.styles, sampler.num_ws, style_bands(sampler.config))
    images = style_mix(
        sampler,
        rows,
        cols,
        styles,
        psi=args.trunc,
        noise_mode=args.noise_mode,
        cutoff=args.trunc_cutoff,
        class_idx=args.class_idx,
        batch_size=args.batch,
    )
    os.makedirs(args.outdir, exist_ok=True)
    for (row, col), image in images.items():
        _save_png(image, os.path.join(args.outdir, f"{row}-{col}.png"))
    _save_png(mix_grid(images, rows, cols), os.path.join(args.outdir, "grid.png"))
    return 0


def _parse_path2(text: str) -> tuple[tuple[float, float], tuple[float, float]]:
    from gan.sampling import parse_vec2

    parts = text.split(":")
    if len(parts) == 1:
        v = parse_vec2(parts[0])
        return v, v
    if len(parts) == 2:
        return parse_vec2(parts[0]), parse_vec2(parts[1])
    from gan.errors import GanError

    raise GanError(f"invalid translate path {text!r}: expected X,Y or X0,Y0:X1,Y1")


def _parse_path1(text: str) -> tuple[float, float]:
    from gan.errors import GanError

    try:
        values = [float(p) for p in text.split(":")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(abs(v) < float("inf") for v in values):
        raise GanError(f"invalid rotate path {text!r}: expected DEG or DEG0:DEG1")
    return (values[0], values[-1])


def _video(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gan.errors import GanError
    from gan.sampling import parse_seeds
    from gan.video import check_video_options, encode_video, format_for_path, walk_frames

    seeds = parse_seeds(args.seeds)
    fmt = format_for_path(args.out)
    check_video_options(fmt, args.fps)
    if args.frames < 1:
        raise GanError(f"--frames must be >= 1, got {args.frames}")
    if args.batch < 1:
        raise GanError(f"--batch must be >= 1, got {args.batch}")
    translate = _parse_path2(args.translate) if args.translate is not None else None
    rotate = _parse_path1(args.rotate) if args.rotate is not None else None
    sampler = _load(args)
    edits = _edits(args, sampler)
    sweep = _sweep(args, sampler)
    frames = walk_frames(
        sampler,
        seeds,
        args.frames,
        space=args.space,
        psi=args.trunc,
        cutoff=args.trunc_cutoff,
        class_idx=args.class_idx,
        noise_mode=args.noise_mode,
        loop=args.loop,
        translate=translate,
        rotate=rotate,
        batch_size=args.batch,
        edits=edits,
        sweep=sweep,
    )
    data = encode_video(
        tqdm(frames, total=args.frames, desc="video", unit="frame", disable=None), fmt, args.fps
    )
    parent = os.path.dirname(args.out)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(data)
    return 0


def _sweep(args: argparse.Namespace, sampler: Sampler) -> Sweep | None:
    from gan.editing import Sweep, load_directions, parse_edit, resolve_edits
    from gan.errors import GanError

    if args.sweep is None:
        return None
    if args.directions is None:
        raise GanError("--sweep needs --directions FILE (from `stylegan directions`)")
    direction_id, sep, rest = args.sweep.partition(":")
    start, sep2, stop = rest.partition(":")
    if not (sep and sep2):
        raise GanError(f"invalid --sweep {args.sweep!r}: expected ID:START:STOP, like sefa-all-0:-5:5")
    first, last = parse_edit(f"{direction_id}:{start}"), parse_edit(f"{direction_id}:{stop}")
    [edit] = resolve_edits([first], load_directions(args.directions))
    return Sweep(edit.direction, first.strength, last.strength)
