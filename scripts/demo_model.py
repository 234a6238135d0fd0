"""Steps of scripts/train_demo_model.sh that have no `stylegan` command: export, preview grid, and the
stand-in feature network for the provenance metric.

    python scripts/demo_model.py export RUN_DIR_OR_CHECKPOINT worker/assets/demo/cartoon-faces-64.safetensors
    python scripts/demo_model.py grid MODEL preview.png [--seeds 0-31] [--cols 8] [--psi 1]
    python scripts/demo_model.py detector pixels.pt
    python scripts/demo_model.py reference pixels.pt TRAIN.zip HELDOUT.zip [--num N]

The official Inception detector cannot be downloaded on the machines the demo model was trained on, so
its metric is FID/KID computed by `stylegan metrics` in a stated stand-in feature space
(`PixelFeatures`): area-downsampled pixels, which measure colour and layout (face size and position,
skin, hair and background colours) but not fine detail. Those numbers are not comparable with
published FID values.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gan.io.checkpoint import load_network, save_generator
from gan.sampling import Sampler, parse_seeds

DEMO_LICENSE = (
    "Apache-2.0: trained from scratch by this project on procedurally generated cartoon faces "
    "(scripts/make_cartoon_faces.py); no third-party weights or images."
)


def export(src: Path, out: Path) -> Path:
    """G_ema of `src` (a training checkpoint, or the newest one in a run folder) as a model file."""
    from gan.config import GeneratorConfig
    from gan.generator import build_generator
    from gan.training.checkpoint import latest_checkpoint, load_checkpoint

    path = latest_checkpoint(src) if src.is_dir() else src
    if path is None:
        raise SystemExit(f"no checkpoint in {src}")
    ckpt = load_checkpoint(path)
    G_ema = build_generator(GeneratorConfig.from_dict(ckpt.meta["G_config"]))
    G_ema.load_state_dict(ckpt.module_state("G_ema"))
    kimg = int(path.stem.split("-")[1]) / 1000  # checkpoint-<nimg>.safetensors
    source = f"scripts/train_demo_model.sh, G_ema at {kimg:g} kimg ({path.name})"
    save_generator(G_ema.eval().requires_grad_(False), out, license_note=DEMO_LICENSE, source=source)
    print(f"{path} ({kimg:g} kimg) -> {out}")
    return out


def grid(model: Path, out: Path, seeds: list[int], cols: int, psi: float) -> Path:
    """Seeds laid out row by row, the same pixels as `stylegan generate` (noise const)."""
    sampler = Sampler(load_network(model))
    images = sampler.images(seeds, psi=psi, noise_mode="const")  # [N, H, W, C] uint8
    n, h, w, c = images.shape
    rows = -(-n // cols)
    canvas = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i, image in enumerate(images):
        r, k = divmod(i, cols)
        canvas[r * h : (r + 1) * h, k * w : (k + 1) * w] = image
    Image.fromarray(canvas[:, :, 0] if c == 1 else canvas).save(out, optimize=True)
    print(f"{n} images {w}x{h} -> {out}")
    return out


class PixelFeatures(torch.nn.Module):
    """Stand-in detector: uint8 [N, 3, H, W] -> 448 features, RGB averaged over 8x8 cells (192: colour
    and layout) and luma averaged over 16x16 cells (256: the eyes, mouth and hair outline are a few
    pixels wide at 64 px, so 8x8 cells would average them away). Values in [0, 1]."""

    def forward(self, images: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        x = images.float() / 255  # [N, 3, H, W]
        colour = F.adaptive_avg_pool2d(x, 8).flatten(1)  # [N, 192]
        luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)  # ITU-R BT.601
        shape = F.adaptive_avg_pool2d(luma, 16).flatten(1)  # [N, 256]
        return torch.cat([colour, shape], dim=1)


def detector(out: Path) -> Path:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(PixelFeatures()), buf)
    out.write_bytes(buf.getvalue())
    print(f"stand-in detector (8x8 RGB + 16x16 luma cells, 448 features) -> {out}")
    return out


def reference(detector_path: Path, train: Path, heldout: Path, num: int | None) -> dict[str, float]:
    """The same metrics between the training set and fresh faces from the same script (another seed):
    what a generator that had learnt the distribution exactly would score with this many images, the
    floor to read the model's value against."""
    from gan.metrics.detector import load_detector
    from gan.metrics.features import dataset_features
    from gan.metrics.fid import fid_from_features
    from gan.metrics.kid import kid_from_features
    from gan.training.dataset import ImageDataset

    det = load_detector(detector_path)
    real = dataset_features(ImageDataset(train), det)
    fresh = dataset_features(ImageDataset(heldout), det, num)
    values = {
        "fid": fid_from_features(real, fresh),
        "kid": kid_from_features(real, fresh, rng=np.random.default_rng(0)),
    }
    print(f"training set vs {len(fresh)} held-out faces: {values}")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="G_ema of a training checkpoint -> model file")
    e.add_argument("src", type=Path, help="a training checkpoint, or a run folder (newest checkpoint)")
    e.add_argument("out", type=Path)
    g = sub.add_parser("grid", help="preview grid PNG")
    g.add_argument("model", type=Path)
    g.add_argument("out", type=Path)
    g.add_argument("--seeds", default="0-31")
    g.add_argument("--cols", type=int, default=8)
    g.add_argument("--psi", type=float, default=1.0)
    d = sub.add_parser("detector", help="write the stand-in TorchScript feature network")
    d.add_argument("out", type=Path)
    r = sub.add_parser("reference", help="metric floor: training set vs held-out faces")
    r.add_argument("detector", type=Path)
    r.add_argument("train", type=Path)
    r.add_argument("heldout", type=Path)
    r.add_argument("--num", type=int, help="held-out images to use (default all)")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    if args.cmd == "export":
        export(args.src, args.out)
    elif args.cmd == "grid":
        grid(args.model, args.out, parse_seeds(args.seeds), args.cols, args.psi)
    elif args.cmd == "detector":
        detector(args.out)
    else:
        reference(args.detector, args.train, args.heldout, args.num)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
