"""Command `project` of the `stylegan` command (see gan/cli.py): fit a w to an image.

Thin over `gan.projection`, with the outputs of the official `projector.py`: `projected_w.npz` (key
"w", [1, num_ws, w_dim], as the official writes and its `generate.py --projected-w` reads), `target.png` (the cropped and resized target), `proj.png` (the projected w rendered), and with
`--save-video` `proj.mp4`: target and projection side by side, one frame per step, at 10 fps as the
official.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

from gan.vocabulary import MAX_SEED


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `project`; its handler takes the parsed args."""
    p = subparsers.add_parser(
        "project",
        help="project an image into the latent space (GAN inversion)",
        description="Find the w whose image is closest to --target (LPIPS on VGG16), as the official "
        "projector.py; the target is centre-cropped to a square and resized (LANCZOS) to the model.",
    )
    p.add_argument("--network", required=True, help="official .pkl, TensorFlow .pkl or our .safetensors")
    p.add_argument("--target", required=True, help="the image to project (PNG, JPEG, ...)")
    p.add_argument("--space", choices=("w", "w+"), default="w", help="one w for all layers, or one per layer")
    p.add_argument("--steps", type=int, default=1000, help="optimisation steps (default 1000)")
    p.add_argument("--seed", type=int, default=303, help="random seed (default 303, as the official)")
    p.add_argument("--class", dest="class_idx", type=int, help="class index for a conditional model")
    p.add_argument(
        "--vgg",
        help="NVIDIA's VGG16 file (vgg16.pt or vgg16.pkl) as a path or URL; default: the official URL, "
        "downloaded once into the cache",
    )
    p.add_argument("--vgg-sha256", help="refuse a VGG16 file whose SHA-256 differs")
    p.add_argument("--save-video", action="store_true", help="also write proj.mp4 of the optimisation")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--outdir", required=True, help="where to write the files")
    p.set_defaults(handler=_project)


def _project(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from gan.errors import GanError
    from gan.io.checkpoint import load_network
    from gan.perceptual import VGG16_LPIPS_URL, load_vgg16_lpips
    from gan.projection import ProjectionStep, open_image, prepare_target, project, render_ws
    from gan.sampling import resolve_device

    if args.steps < 1:
        raise GanError(f"--steps must be >= 1, got {args.steps}")
    if not 0 <= args.seed <= MAX_SEED:
        raise GanError(f"--seed must be in [0, {MAX_SEED}], got {args.seed}")
    # Cheap checks first: a bad target or device fails before a large network or VGG16 is read.
    device = resolve_device(args.device)
    image = open_image(args.target)
    G = load_network(args.network, device)
    target = prepare_target(image, G.img_resolution)
    vgg = load_vgg16_lpips(args.vgg or VGG16_LPIPS_URL, sha256=args.vgg_sha256, device=device)

    # disable=None: shown on a terminal, silent when stderr is a pipe or a log file.
    with tqdm(total=args.steps, desc="project", unit="step", disable=None) as bar:

        def progress(info: ProjectionStep) -> None:
            bar.set_postfix(dist=f"{info.distance:.4g}", loss=f"{info.loss:.4g}", refresh=False)
            bar.update(1)

        result = project(
            G,
            target,
            perceptual=vgg,
            space=args.space,
            num_steps=args.steps,
            seed=args.seed,
            class_idx=args.class_idx,
            device=device,
            keep_steps=args.save_video,
            callback=progress,
        )

    os.makedirs(args.outdir, exist_ok=True)
    Image.fromarray(target.numpy(), "RGB").save(os.path.join(args.outdir, "target.png"))
    Image.fromarray(result.image, "RGB").save(os.path.join(args.outdir, "proj.png"))
    np.savez(os.path.join(args.outdir, "projected_w.npz"), w=result.ws.numpy())
    if args.save_video:
        from gan.video import encode_video

        assert result.w_steps is not None
        target_np = target.numpy()
        w_steps = result.w_steps

        def frames() -> Iterator[np.ndarray]:
            for step in tqdm(range(w_steps.shape[0]), desc="video", unit="frame", disable=None):
                proj = render_ws(G, w_steps[step : step + 1].contiguous())[0]
                yield np.concatenate([target_np, proj], axis=1)  # [R, 2R, 3]

        data = encode_video(frames(), "mp4", fps=10)
        with open(os.path.join(args.outdir, "proj.mp4"), "wb") as f:
            f.write(data)
    return 0
