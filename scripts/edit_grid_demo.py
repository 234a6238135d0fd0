"""Render docs/images/demo-edit-grid.png, the README's edit grid: the demo model's top three SeFa
directions (all layers), each as seeds (rows) x strengths (columns). Run: python scripts/edit_grid_demo.py"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from gan.editing import edit_images, grid, sefa
from gan.io.checkpoint import load_network
from gan.sampling import Sampler, to_uint8

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [1, 4, 7]
STRENGTHS = [-5.0, -2.5, 0.0, 2.5, 5.0]
GAP = 6  # white pixels between the directions' blocks


def main() -> None:
    G = load_network(ROOT / "worker" / "assets" / "demo" / "cartoon-faces-64.safetensors", "cpu")
    sampler = Sampler(G)
    res = G.config.img_resolution
    blocks = []
    for direction in sefa(G, "all", 3):
        images = edit_images(sampler, SEEDS, direction, STRENGTHS, psi=0.7)
        frames = to_uint8(images.flatten(0, 1)).reshape(len(SEEDS), len(STRENGTHS), res, res, -1)
        blocks += [grid(frames), np.full((GAP, len(STRENGTHS) * res, 3), 255, np.uint8)]
    picture = np.concatenate(blocks[:-1])
    out = ROOT / "docs" / "images" / "demo-edit-grid.png"
    Image.fromarray(picture).resize((picture.shape[1] * 2, picture.shape[0] * 2), Image.NEAREST).save(out)
    print(out)


if __name__ == "__main__":
    main()
