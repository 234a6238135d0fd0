"""Semantic editing in W: directions found without labels, and edits along them.

Two label-free ways to find directions that change one thing at a time (pose, age, smile, lighting):

SeFa (Shen and Zhou, "Closed-Form Factorization of Latent Semantics in GANs", CVPR 2021). Every
modulated convolution starts with an affine map s = A_l w + b_l from w to its per-input-channel styles.
A direction n moves the styles by A_l n, so the directions that move the styles most, over the chosen
layers, maximise sum_l |A_l n|^2 = n^T (A^T A) n for unit n, with A the stacked A_l: they are the
eigenvectors of A^T A by descending eigenvalue. We stack the affine rows of the convolution layers whose
w index lies in the chosen range (toRGB layers and StyleGAN3's input are left out: they change colour
and framing, not content), each row normalised to unit length so that no channel dominates by its scale.

GANSpace (Härkönen et al., "GANSpace: Discovering Interpretable GAN Controls", NeurIPS 2020): the
principal components of w = mapping(z) over many z (psi 1). Each component comes with its standard
deviation sigma, so that an edit's strength is given in sigmas, i.e. in units of how far real samples
spread along it.

An edit adds strength * direction to the ws of a layer range, after truncation:
`ws[:, layers] += strength * scale * direction` (scale is sigma for GANSpace, 1 otherwise). Strength 0
leaves the ws, and so the image, exactly as they were.

Layer ranges are those of style mixing (`gan.mixing`): `coarse`, `middle`, `fine`, `all`, or `a-b` / `a`
as ws indices.
"""

from __future__ import annotations

import math
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from gan.errors import GanError
from gan.mixing import BANDS, style_bands
from gan.stylegan2.synthesis import SynthesisBlock
from gan.stylegan2.synthesis import SynthesisNetwork as StyleGAN2Synthesis
from gan.stylegan3.synthesis import SynthesisNetwork as StyleGAN3Synthesis

if TYPE_CHECKING:
    from gan.config import GeneratorConfig
    from gan.generator import Generator
    from gan.sampling import Sampler

Method = Literal["sefa", "ganspace", "user"]
METHODS: tuple[Method, ...] = ("sefa", "ganspace", "user")
_METHOD_NAMES: dict[str, Method] = {m: m for m in METHODS}
# Names of the layer ranges besides `a-b`: the style-mixing bands and the whole of w.
RANGE_NAMES = (*BANDS, "all")
# More edits than this on one image is a request to render noise, not a picture.
MAX_EDITS = 8
# A user's direction is named like an identifier; the generated ones (`sefa-...`, `ganspace-...`) are not
# user names, so that an id always says where its direction came from.
_USER_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,47}$")
_RANGE = re.compile(r"^(\d{1,4})(?:-(\d{1,4}))?$")
_EDIT = re.compile(r"^(?P<id>[^:@\s]+):(?P<strength>[^@\s]+)(?:@(?P<layers>\S+))?$")


# --- layer ranges ---------------------------------------------------------------------------------------


def normalise_layers(text: str) -> str:
    """A layer range in one spelling (`Coarse` -> `coarse`, `3-3` -> `3`), checked for form only."""
    name = text.strip().lower()
    if name in RANGE_NAMES:
        return name
    m = _RANGE.match(name)
    if m is None:
        raise GanError(
            f"invalid layer range {text!r}: expected {', '.join(RANGE_NAMES)}, or ws indices like 0-3"
        )
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if hi < lo:
        raise GanError(f"invalid layer range {text!r}: the end is below the start")
    return str(lo) if lo == hi else f"{lo}-{hi}"


def layer_indices(text: str, config: GeneratorConfig) -> list[int]:
    """The ws indices a layer range names for this model; a range it does not have is an error."""
    name = normalise_layers(text)
    num_ws = config.num_ws
    if name == "all":
        return list(range(num_ws))
    if name in BANDS:
        indices = style_bands(config)[name]
        if not indices:
            raise GanError(f"layer range {name!r} holds no ws at this model's resolution")
        return indices
    lo, _, hi = name.partition("-")
    first, last = int(lo), int(hi or lo)
    if last >= num_ws:
        raise GanError(f"layer range {name!r} is out of range: this model has ws 0-{num_ws - 1}")
    return list(range(first, last + 1))


# --- directions -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Direction:
    """A direction in W. `vector` [w_dim] float32; `layers` is the range it was found for and is applied
    to by default; `value` is SeFa's eigenvalue or GANSpace's explained-variance ratio; `sigma` is
    GANSpace's standard deviation along it (an edit's unit), None for the others."""

    id: str
    method: Method
    layers: str
    rank: int
    vector: np.ndarray = field(repr=False)
    value: float | None = None
    sigma: float | None = None

    @property
    def scale(self) -> float:
        """What one unit of strength moves w by, along `vector`."""
        return 1.0 if self.sigma is None else float(self.sigma)


def direction_id(method: Method, layers: str, rank: int) -> str:
    """`sefa-coarse-0`, `sefa-0-3-2`, `ganspace-all-5`: the method, the range and the rank."""
    return f"{method}-{layers}-{rank}"


def check_user_name(name: str) -> str:
    """A user's direction name: lower-case letters, digits, `_` and `.`, starting with a letter."""
    if not _USER_NAME.match(name):
        raise GanError(
            f"invalid direction name {name!r}: use 1-48 lower-case letters, digits, _ or ., starting with a letter"
        )
    return name


def user_direction(
    name: str, vector: np.ndarray | Sequence[float], w_dim: int, layers: str = "all"
) -> Direction:
    """A direction found elsewhere (InterFaceGAN's boundary normal, a difference of means), used as given:
    its length is the step of one unit of strength."""
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    if v.shape[0] != w_dim:
        raise GanError(f"the direction has {v.shape[0]} numbers; this model's w has {w_dim}")
    if not np.isfinite(v).all():
        raise GanError("the direction holds non-finite numbers")
    if not np.any(v):
        raise GanError("the direction is all zeros")
    return Direction(check_user_name(name), "user", normalise_layers(layers), 0, v.astype(np.float32))


def style_affines(G: Generator) -> list[tuple[int, torch.Tensor]]:
    """(ws index, affine weight [in_channels, w_dim]) of every modulated convolution, in order.

    toRGB layers are left out, and so is StyleGAN3's input (its affine turns w into a rotation and a
    translation of the Fourier features, not into styles). The weights are the stored ones: their
    equalised-learning-rate gain is one scalar per layer, which the row normalisation of SeFa removes.
    """
    synthesis = G.synthesis
    found: list[tuple[int, torch.Tensor]] = []
    if isinstance(synthesis, StyleGAN3Synthesis):
        for i, layer in enumerate(synthesis.layers()):
            if not layer.is_torgb:
                found.append((i + 1, layer.affine.weight))  # ws 0 drives the input, ws i + 1 layer i
        return found
    assert isinstance(synthesis, StyleGAN2Synthesis)
    w_idx = 0
    for res in synthesis.block_resolutions:
        block: SynthesisBlock = getattr(synthesis, f"b{res}")
        convs = [block.conv0, block.conv1] if hasattr(block, "conv0") else [block.conv1]
        for offset, conv in enumerate(convs):
            found.append((w_idx + offset, conv.affine.weight))
        w_idx += block.num_conv
    return found


def sefa(G: Generator, layers: str = "all", k: int | None = None) -> list[Direction]:
    """The top `k` SeFa directions (all w_dim of them when k is None) for a layer range."""
    name = normalise_layers(layers)
    indices = set(layer_indices(name, G.config))
    weights = [w for i, w in style_affines(G) if i in indices]
    if not weights:
        raise GanError(
            f"layer range {name!r} holds no convolution layer of this model (only its input or toRGB)"
        )
    with torch.no_grad():
        a = torch.cat([w.detach().to("cpu", torch.float64) for w in weights])  # [rows, w_dim]
        a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
        values, vectors = torch.linalg.eigh(a.T @ a)  # ascending
    order = torch.argsort(values, descending=True)
    k = len(order) if k is None else _check_k(k, len(order))
    out = []
    for rank, j in enumerate(order[:k].tolist()):
        v = _fixed_sign(vectors[:, j].numpy())
        out.append(Direction(direction_id("sefa", name, rank), "sefa", name, rank, v, float(values[j])))
    return out


@dataclass(frozen=True)
class GanSpace:
    """GANSpace's result: the components, the mean w they are centred on, and the samples used."""

    directions: list[Direction]
    mean: np.ndarray
    samples: int


def ganspace(
    G: Generator,
    samples: int = 100_000,
    k: int = 20,
    seed: int = 0,
    batch_size: int = 2_000,
    progress: Callable[[int, int], None] | None = None,
) -> GanSpace:
    """PCA of `samples` mapped w (psi 1), z drawn from `np.random.RandomState(seed)` in one stream.

    A conditional model's label is drawn uniformly per sample from the same stream. The covariance is
    accumulated in float64 batch by batch, so memory does not grow with `samples`; `progress(done, total)`
    is called after each batch.
    """
    if samples < 2:
        raise GanError(f"GANSpace needs at least 2 samples, got {samples}")
    w_dim = int(G.config.w_dim)
    k = _check_k(k, w_dim)
    rng = np.random.RandomState(seed)
    device = next(iter(G.parameters())).device
    total = torch.zeros(w_dim, dtype=torch.float64)
    outer = torch.zeros(w_dim, w_dim, dtype=torch.float64)
    done = 0
    while done < samples:
        n = min(batch_size, samples - done)
        z = torch.from_numpy(rng.randn(n, G.z_dim)).to(device, torch.float32)
        c = torch.zeros(n, G.c_dim, device=device)
        if G.c_dim:
            c[torch.arange(n), torch.from_numpy(rng.randint(G.c_dim, size=n))] = 1
        with torch.inference_mode():
            w = G.mapping(z, c, psi=1.0)[:, 0].to("cpu", torch.float64)  # [n, w_dim]
        total += w.sum(0)
        outer += w.T @ w
        done += n
        if progress is not None:
            progress(done, samples)
    mean = total / samples
    cov = (outer - samples * torch.outer(mean, mean)) / (samples - 1)
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp_min(0)
    order = torch.argsort(values, descending=True)[:k]
    explained = float(values.sum())
    directions = []
    for rank, j in enumerate(order.tolist()):
        v = _fixed_sign(vectors[:, j].numpy())
        var = float(values[j])
        directions.append(
            Direction(
                direction_id("ganspace", "all", rank),
                "ganspace",
                "all",
                rank,
                v,
                value=var / explained if explained > 0 else 0.0,
                sigma=math.sqrt(var),
            )
        )
    return GanSpace(directions, mean.numpy().astype(np.float32), samples)


def _check_k(k: int, available: int) -> int:
    if not 1 <= k <= available:
        raise GanError(f"k must be in [1, {available}] here, got {k}")
    return k


def _fixed_sign(v: np.ndarray) -> np.ndarray:
    """An eigenvector has no sign of its own; make its largest component positive so that the same
    model always gives the same direction (and +strength means the same thing in every run)."""
    v = np.asarray(v, dtype=np.float64)
    if v[np.argmax(np.abs(v))] < 0:
        v = -v
    return v.astype(np.float32)


# --- edits ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """A step along a direction: `ws[:, layers] += strength * scale * vector`."""

    direction: Direction
    strength: float
    layers: str | None = None  # None: the direction's own range

    @property
    def range(self) -> str:
        return self.direction.layers if self.layers is None else self.layers

    def spec(self) -> str:
        """`id:strength` or `id:strength@range`, the form `parse_edit` reads."""
        text = f"{self.direction.id}:{self.strength!r}"
        return text if self.layers is None else f"{text}@{self.layers}"


@dataclass(frozen=True)
class EditSpec:
    """`ID:STRENGTH[@RANGE]` as a user typed it, before the id is looked up."""

    id: str
    strength: float
    layers: str | None


def parse_edit(text: str) -> EditSpec:
    """`sefa-coarse-0:2.5`, `smile:-1@0-5` -> EditSpec; the strength must be a finite number."""
    m = _EDIT.match(text.strip())
    if m is None:
        raise GanError(
            f"invalid edit {text!r}: expected ID:STRENGTH or ID:STRENGTH@RANGE, like sefa-coarse-0:2.5"
        )
    try:
        strength = float(m.group("strength"))
    except ValueError:
        raise GanError(
            f"invalid edit {text!r}: the strength {m.group('strength')!r} is not a number"
        ) from None
    if not math.isfinite(strength):
        raise GanError(f"invalid edit {text!r}: the strength must be a finite number")
    layers = m.group("layers")
    return EditSpec(m.group("id"), strength, None if layers is None else normalise_layers(layers))


def resolve_edits(specs: Sequence[EditSpec], directions: dict[str, Direction]) -> list[Edit]:
    """EditSpecs -> Edits, each id looked up in `directions`; at most MAX_EDITS."""
    if len(specs) > MAX_EDITS:
        raise GanError(f"{len(specs)} edits: at most {MAX_EDITS} on one image")
    edits = []
    for spec in specs:
        direction = directions.get(spec.id)
        if direction is None:
            known = ", ".join(sorted(directions)[:5]) or "none"
            raise GanError(
                f"unknown direction {spec.id!r} (known: {known}{', ...' if len(directions) > 5 else ''})"
            )
        edits.append(Edit(direction, spec.strength, spec.layers))
    return edits


@dataclass(frozen=True)
class Offset:
    """An edit made concrete for one model: add `delta` [w_dim] to the ws at `indices`. This is what
    travels to a worker; the ws indices are resolved against the model before."""

    delta: np.ndarray
    indices: tuple[int, ...]


def offsets(edits: Iterable[Edit], config: GeneratorConfig) -> list[Offset]:
    """The Offsets of edits on a model, refusing a range or a vector it does not have."""
    out = []
    for edit in edits:
        vector = edit.direction.vector
        if vector.shape != (config.w_dim,):
            raise GanError(
                f"direction {edit.direction.id!r} has {vector.size} numbers; this model's w has {config.w_dim}"
            )
        delta = (edit.strength * edit.direction.scale * vector.astype(np.float64)).astype(np.float32)
        out.append(Offset(delta, tuple(layer_indices(edit.range, config))))
    return out


def apply_offsets(ws: torch.Tensor, edits: Sequence[Offset]) -> torch.Tensor:
    """ws [..., num_ws, w_dim] with every offset added; a new tensor (ws itself is left as it is)."""
    if not edits:
        return ws
    out = ws.clone()
    for edit in edits:
        if not np.any(edit.delta):
            continue  # strength 0: exactly the unedited ws
        delta = torch.from_numpy(edit.delta).to(out.device, out.dtype)
        out[..., list(edit.indices), :] += delta
    return out


def apply_edits(ws: torch.Tensor, edits: Sequence[Edit], config: GeneratorConfig) -> torch.Tensor:
    """ws [..., num_ws, w_dim] moved along each edit's direction over its layer range."""
    return apply_offsets(ws, offsets(edits, config))


# --- renders --------------------------------------------------------------------------------------------


def edit_images(
    sampler: Sampler,
    seeds: Sequence[int],
    direction: Direction,
    strengths: Sequence[float],
    psi: float = 1.0,
    cutoff: int | None = None,
    class_idx: int | None = None,
    layers: str | None = None,
    base_edits: Sequence[Edit] = (),
    batch_size: int = 8,
) -> torch.Tensor:
    """Float images [len(seeds), len(strengths), C, H, W]: each seed moved by each strength along
    `direction` (after truncation, and after `base_edits`). Noise is const, as edits are compared."""
    if not seeds or not strengths:
        raise GanError("an edit grid needs at least one seed and one strength")
    for s in strengths:
        if not math.isfinite(s):
            raise GanError(f"strength {s} is not a finite number")
    config = sampler.config
    base = sampler.ws_for_seeds(seeds, psi=psi, cutoff=cutoff, class_idx=class_idx).cpu()
    base = apply_edits(base, base_edits, config)
    rows = [
        apply_edits(base, [Edit(direction, float(s), layers)], config) for s in strengths
    ]  # each [S, num_ws, w_dim]
    ws = torch.stack(rows, dim=1).reshape(-1, sampler.num_ws, config.w_dim)  # seed-major
    images = sampler.synthesize(ws, "const", batch_size=batch_size)
    return images.reshape(len(seeds), len(strengths), *images.shape[1:])


def grid(images: np.ndarray) -> np.ndarray:
    """uint8 [R, C, H, W, ch] -> one image [R * H, C * W, ch], rows top to bottom."""
    r, c, h, w, ch = images.shape
    return images.transpose(0, 2, 1, 3, 4).reshape(r * h, c * w, ch)


@dataclass(frozen=True)
class Sweep:
    """A clip's move along one direction: strength from `start` to `stop` over its frames."""

    direction: Direction
    start: float = -3.0
    stop: float = 3.0
    layers: str | None = None  # None: the direction's own range


def sweep_strengths(start: float, stop: float, frames: int, loop: bool = False) -> list[float]:
    """Strengths for a clip along one direction: `frames` evenly from start to stop (and back, looped)."""
    if frames < 1:
        raise GanError(f"frames must be >= 1, got {frames}")
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise GanError("sweep strengths must be finite numbers")
    if loop:
        half = np.linspace(start, stop, frames // 2 + 1)
        values = np.concatenate([half, half[-2:0:-1]])[:frames]
        return [float(v) for v in np.resize(values, frames)]
    return [float(v) for v in np.linspace(start, stop, frames)]


# --- files ----------------------------------------------------------------------------------------------


def save_directions(path: str | Path, directions: Sequence[Direction]) -> None:
    """An .npz that `load_directions` reads back (no pickles: plain arrays and strings)."""
    if not directions:
        raise GanError("no directions to save")
    np.savez(
        path,
        ids=np.array([d.id for d in directions]),
        methods=np.array([d.method for d in directions]),
        layers=np.array([d.layers for d in directions]),
        ranks=np.array([d.rank for d in directions], dtype=np.int64),
        vectors=np.stack([d.vector for d in directions]).astype(np.float32),
        values=np.array([np.nan if d.value is None else d.value for d in directions], dtype=np.float64),
        sigmas=np.array([np.nan if d.sigma is None else d.sigma for d in directions], dtype=np.float64),
    )


def load_directions(path: str | Path) -> dict[str, Direction]:
    """id -> Direction from `save_directions`' .npz, or from a plain .npy vector (a user direction named
    after the file, e.g. InterFaceGAN's `smile.npy` -> `smile`, range `all`)."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:  # a PK header makes np.load try a zip
        raise GanError(f"{path}: not a directions file ({exc})") from None
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise GanError(f"{path}: not a directions file ({exc})") from None
    if isinstance(data, np.ndarray):
        vector = data.reshape(-1)
        return {path.stem.lower(): user_direction(path.stem.lower(), vector, vector.shape[0])}
    with data:
        try:
            ids, methods, layers = data["ids"], data["methods"], data["layers"]
            ranks, vectors, values, sigmas = data["ranks"], data["vectors"], data["values"], data["sigmas"]
        except KeyError as exc:
            raise GanError(f"{path}: not a directions file (no {exc.args[0]!r} array)") from None
        except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
            raise GanError(f"{path}: not a directions file ({exc})") from None
    if vectors.ndim != 2 or not len(ids) == len(methods) == len(layers) == len(vectors):
        raise GanError(f"{path}: not a directions file (arrays of different lengths)")
    out = {}
    for i, id_ in enumerate(ids.tolist()):
        method = _METHOD_NAMES.get(str(methods[i]))
        if method is None:
            raise GanError(f"{path}: direction {id_!r} has unknown method {str(methods[i])!r}")
        out[str(id_)] = Direction(
            str(id_),
            method,
            normalise_layers(str(layers[i])),
            int(ranks[i]),
            vectors[i].astype(np.float32),
            None if np.isnan(values[i]) else float(values[i]),
            None if np.isnan(sigmas[i]) else float(sigmas[i]),
        )
    return out
