"""Style mixing (StyleGAN paper, section 3.1; StyleGAN2-ADA `style_mixing.py`).

A mix takes the row seed's ws and replaces the chosen indices with the column seed's, after truncation,
then synthesises. Indices can be named by the bands of the StyleGAN paper (figure 3): `coarse` = the ws
of layers working at 4-8 px, `middle` = 16-32 px, `fine` = 64 px and up. Each ws index is given a
resolution as follows.

StyleGAN2: index i -> 4 * 2**(i // 2), the paper's convention. At 1024 px (18 ws) that is coarse 0-3,
middle 4-7, fine 8-17. (Strictly, ws 2k+1 also drives the next block's first, upsampling conv; the paper
counts it with the lower resolution and so do we.)

StyleGAN3 (num_layers + 2 ws, 16 by default): ws 0 drives the Fourier input, ws k >= 1 drives layer
L(k-1), the last one being toRGB. Every layer samples on a grid of at least 16 px (its sampling rate is
at least twice its stopband, 2 * 2**2.1 > 8), so grid sizes would leave `coarse` empty for every model.
What says how coarse a layer's content is, is its cutoff frequency f_c (paper section 3.2, cycles per
image): a layer band-limited to f_c holds what a 2 * f_c px image holds, so its resolution is
2 * f_c rounded up to a power of two, at most the image size. The cutoffs grow geometrically from
`first_cutoff` (2, i.e. 4 px) to img_resolution / 2 over the non-critical layers. At 1024 px this gives
coarse 0-2, middle 3-5, fine 6-15; at 64 px coarse 0-4, middle 5-10, fine 11-15.

A named band that holds no ws at a model's resolution (fine on a 32 px StyleGAN2) is an error naming the
band, not an empty selection that would silently return the row image unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from gan.config import GeneratorConfig, StyleGAN3SynthesisConfig
from gan.errors import GanError
from gan.sampling import Sampler, parse_int_list, to_uint8
from gan.stylegan3.synthesis import band_schedule
from gan.vocabulary import NoiseMode

if TYPE_CHECKING:
    from gan.generator import Generator

# Band name -> the (inclusive) range of layer resolutions it covers, in px.
BANDS: dict[str, tuple[int, int]] = {
    "coarse": (4, 8),
    "middle": (16, 32),
    "fine": (64, 2**30),
}


def ws_resolutions(config: GeneratorConfig) -> list[int]:
    """The resolution, in px, that each ws index works at (see the module docstring)."""
    synth = config.synthesis
    if isinstance(synth, StyleGAN3SynthesisConfig):
        # f_c per layer; ws 0 feeds the input (band-limited to cutoffs[0]), ws k feeds layer k - 1.
        cutoffs = band_schedule(synth, config.img_resolution, config.img_channels).cutoffs
        layer_res = [_band_limited_resolution(fc, config.img_resolution) for fc in cutoffs]
        res = [layer_res[0], *layer_res]
    else:
        res = [4 * 2 ** (i // 2) for i in range(config.num_ws)]
    assert len(res) == config.num_ws
    return res


def _band_limited_resolution(cutoff: float, img_resolution: int) -> int:
    # The 1e-9 keeps 2 * f_c = 8.000000000000002 (a geometric series in floats) from rounding up to 16.
    return min(int(2 ** math.ceil(math.log2(2 * cutoff) - 1e-9)), img_resolution)


def style_bands(config: GeneratorConfig) -> dict[str, list[int]]:
    """Band name -> ws indices at that model's resolution (a band may be empty here)."""
    res = ws_resolutions(config)
    return {name: [i for i, r in enumerate(res) if lo <= r <= hi] for name, (lo, hi) in BANDS.items()}


def parse_styles(text: str, num_ws: int, bands: dict[str, list[int]] | None = None) -> list[int]:
    """'0-6' | '0,1,5-7' | 'coarse' | 'middle,fine' -> sorted distinct ws indices in [0, num_ws).

    Names need `bands` (from `style_bands(config)`); numbers and names can be combined.
    """
    indices: set[int] = set()
    for part in text.split(","):
        name = part.strip().lower()
        if name in BANDS:
            if bands is None:
                raise GanError(f"style band {name!r} needs the model's bands; give indices instead")
            if not bands.get(name):
                raise GanError(f"style band {name!r} holds no layers at this model's resolution")
            indices.update(bands[name])
            continue
        if not name or not name[0].isdigit():
            raise GanError(
                f"invalid styles {text!r}: expected indices like '0-6' or '0,1,5' or one of "
                f"{', '.join(BANDS)}"
            )
        for i in parse_int_list(name, "styles"):
            if i >= num_ws:
                raise GanError(f"style index {i} is out of range: this model has ws 0-{num_ws - 1}")
            indices.add(i)
    if not indices:
        raise GanError(f"no styles selected by {text!r}")
    return sorted(indices)


def mix_ws(
    ws_by_seed: dict[int, torch.Tensor],
    row_seeds: Sequence[int],
    col_seeds: Sequence[int],
    styles: Sequence[int],
) -> dict[tuple[int, int], torch.Tensor]:
    """(row, col) -> [num_ws, w_dim]: the row's ws with `styles` taken from the column's."""
    mixed = {}
    for row in row_seeds:
        for col in col_seeds:
            w = ws_by_seed[row].clone()  # [num_ws, w_dim]
            w[list(styles)] = ws_by_seed[col][list(styles)]
            mixed[(row, col)] = w
    return mixed


def _as_sampler(G: Generator | Sampler) -> Sampler:
    if isinstance(G, Sampler):
        return G
    device = next(iter(G.parameters())).device
    return Sampler(G, device=device)


def style_mix_float(
    G: Generator | Sampler,
    row_seeds: Sequence[int],
    col_seeds: Sequence[int],
    styles: Sequence[int],
    psi: float = 1.0,
    noise_mode: NoiseMode = "const",
    cutoff: int | None = None,
    class_idx: int | None = None,
    batch_size: int = 8,
) -> dict[tuple[int, int], torch.Tensor]:
    """(row, col) -> float image [C, H, W]; (s, s) is seed s unmixed, for every row and column seed.

    Truncation is applied to each seed's ws before mixing, as in the official script. With noise_mode
    "random", a mixed image takes its noise from the row seed.
    """
    sampler = _as_sampler(G)
    if not row_seeds or not col_seeds:
        raise GanError("style mixing needs at least one row seed and one column seed")
    for i in styles:
        if not 0 <= i < sampler.num_ws:
            raise GanError(f"style index {i} is out of range: this model has ws 0-{sampler.num_ws - 1}")
    seeds = list(dict.fromkeys([*row_seeds, *col_seeds]))
    ws = sampler.ws_for_seeds(seeds, psi=psi, cutoff=cutoff, class_idx=class_idx)
    ws_by_seed = dict(zip(seeds, ws, strict=True))
    mixed = mix_ws(ws_by_seed, row_seeds, col_seeds, styles)
    # A seed that is both a row and a column mixes with itself into its own unmixed image: render it once.
    keys = [(s, s) for s in seeds] + [k for k in mixed if k[0] != k[1]]
    all_ws = torch.stack([ws_by_seed[s] for s in seeds] + [mixed[k] for k in keys[len(seeds) :]])
    noise_seeds = [k[0] for k in keys]
    images = sampler.synthesize(all_ws, noise_mode, noise_seeds=noise_seeds, batch_size=batch_size)
    return dict(zip(keys, images, strict=True))


def style_mix(
    G: Generator | Sampler,
    row_seeds: Sequence[int],
    col_seeds: Sequence[int],
    styles: Sequence[int],
    psi: float = 1.0,
    noise_mode: NoiseMode = "const",
    cutoff: int | None = None,
    class_idx: int | None = None,
    batch_size: int = 8,
) -> dict[tuple[int, int], np.ndarray]:
    """(row, col) -> uint8 [H, W, C], the images `style_mixing.py` writes as `{row}-{col}.png`."""
    floats = style_mix_float(G, row_seeds, col_seeds, styles, psi, noise_mode, cutoff, class_idx, batch_size)
    keys = list(floats)
    images = to_uint8(torch.stack([floats[k] for k in keys]))
    return dict(zip(keys, images, strict=True))


def mix_grid(
    images: dict[tuple[int, int], np.ndarray], row_seeds: Sequence[int], col_seeds: Sequence[int]
) -> np.ndarray:
    """The official grid: column seeds along the top, row seeds down the left, mixes inside, black corner.

    Returns uint8 [(rows + 1) * H, (cols + 1) * W, C].
    """
    first = images[(row_seeds[0], col_seeds[0])]
    h, w, ch = first.shape
    grid = np.zeros(((len(row_seeds) + 1) * h, (len(col_seeds) + 1) * w, ch), dtype=np.uint8)
    cells: list[tuple[int, int, tuple[int, int]]] = []
    cells += [(0, c + 1, (col, col)) for c, col in enumerate(col_seeds)]  # top row: the column seeds
    cells += [(r + 1, 0, (row, row)) for r, row in enumerate(row_seeds)]  # left column: the row seeds
    cells += [
        (r + 1, c + 1, (row, col)) for r, row in enumerate(row_seeds) for c, col in enumerate(col_seeds)
    ]
    for r, c, key in cells:
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = images[key]
    return grid
