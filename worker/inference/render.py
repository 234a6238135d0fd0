"""One synchronous image request, as the inference worker runs it: latents -> batcher -> encoded bytes.

The request is one of the validated models of `worker.inference.messages`. A seed's ws is what
`stylegan generate` maps (`Sampler.ws_for_seeds`); a mix is `gan.mixing`'s (the column's `styles` ws
copied into the row after truncation, noise from the row), as `stylegan mix` does; a projected w
([num_ws, w_dim] float32) is used as it is, since it already is the w the projection found.
"""

from __future__ import annotations

import io
import time

import numpy as np
import torch
from PIL import Image

from gan.editing import Offset, apply_offsets, normalise_layers, sefa
from gan.errors import GanError
from gan.mixing import mix_ws, parse_styles, style_bands
from gan.sampling import Sampler
from gan.vocabulary import CONTENT_TYPES, check_image_format
from worker.inference.batcher import MicroBatcher, SynthesisGroup
from worker.inference.engine import ModelCache
from worker.inference.messages import (
    EditOffset,
    FoundDirections,
    MixRequest,
    RenderedImage,
    RenderTimings,
    SampleRequest,
    SeedLatent,
    SefaRequest,
    WLatent,
    WRequest,
)

# Lossy formats: quality 90 keeps faces free of visible blocking at about a fifth of the PNG's bytes.
LOSSY_QUALITY = 90
# The labels gan.mixing.mix_ws keys a mix by (it takes seeds; here the latents may be projected ws).
_ROW, _COL = 0, 1


class RenderError(GanError):
    """A request the model refuses; `field` names the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def encode_image(image: np.ndarray, fmt: str) -> bytes:
    """uint8 [H, W, C] -> PNG (lossless), JPEG or WebP (quality LOSSY_QUALITY) bytes."""
    fmt = check_image_format(fmt)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise GanError(f"expected a uint8 [H, W, 1 or 3] image, got {image.dtype} {image.shape}")
    pil = Image.fromarray(image[:, :, 0], "L") if image.shape[2] == 1 else Image.fromarray(image, "RGB")
    buf = io.BytesIO()
    if fmt == "png":
        pil.save(buf, format="PNG")
    elif fmt == "jpg":
        pil.save(buf, format="JPEG", quality=LOSSY_QUALITY)
    else:
        pil.save(buf, format="WEBP", quality=LOSSY_QUALITY)
    return buf.getvalue()


def decode_w(raw: bytes, num_ws: int, w_dim: int, field: str) -> torch.Tensor:
    """The bytes of a WLatent -> [num_ws, w_dim] float32, refused unless it fits this model."""
    if len(raw) != num_ws * w_dim * 4:
        raise RenderError(
            field, f"the projected w holds {len(raw) // 4} numbers; this model needs [{num_ws}, {w_dim}]"
        )
    w = np.frombuffer(raw, dtype="<f4").reshape(num_ws, w_dim)
    if not np.isfinite(w).all():
        raise RenderError(field, "the projected w holds non-finite numbers")
    return torch.from_numpy(w.copy())


def _seed_ws(sampler: Sampler, seed: int, request: SampleRequest | MixRequest, field: str) -> torch.Tensor:
    """[num_ws, w_dim]: the seed's ws, truncated as the request says."""
    image = request.image
    try:
        ws = sampler.ws_for_seeds([seed], psi=image.psi, cutoff=image.cutoff, class_idx=image.class_idx)
    except GanError as exc:
        raise RenderError(field, str(exc)) from None
    return ws[0]


def _latent_ws(
    sampler: Sampler, latent: SeedLatent | WLatent, request: MixRequest, field: str
) -> tuple[torch.Tensor, int]:
    """The [num_ws, w_dim] ws of a seed or a projected w, and the seed its noise is drawn from."""
    if isinstance(latent, SeedLatent):
        return _seed_ws(sampler, latent.seed, request, field), latent.seed
    return decode_w(latent.w, sampler.num_ws, sampler.config.w_dim, field), 0


def _mix_ws(sampler: Sampler, request: MixRequest) -> tuple[torch.Tensor, int]:
    row, row_noise = _latent_ws(sampler, request.row, request, "row")
    col, _ = _latent_ws(sampler, request.col, request, "col")
    try:
        styles = parse_styles(request.styles, sampler.num_ws, style_bands(sampler.config))
    except GanError as exc:
        raise RenderError("styles", str(exc)) from None
    mixed = mix_ws({_ROW: row, _COL: col}, [_ROW], [_COL], styles)[(_ROW, _COL)]
    return mixed, row_noise  # as gan.mixing.style_mix: a mixed image takes its noise from the row


def decode_edits(edits: tuple[EditOffset, ...], num_ws: int, w_dim: int) -> list[Offset]:
    """The request's edit offsets, refused unless they fit this model."""
    out = []
    for edit in edits:
        if len(edit.delta) != w_dim * 4:
            raise RenderError(
                "edits", f"an edit holds {len(edit.delta) // 4} numbers; this model's w has {w_dim}"
            )
        delta = np.frombuffer(edit.delta, dtype="<f4")
        if not np.isfinite(delta).all():
            raise RenderError("edits", "an edit holds non-finite numbers")
        if max(edit.indices) >= num_ws:
            raise RenderError(
                "edits", f"an edit names ws {max(edit.indices)}; this model has ws 0-{num_ws - 1}"
            )
        out.append(Offset(delta.copy(), edit.indices))
    return out


def find_sefa(request: SefaRequest, cache: ModelCache) -> FoundDirections:
    """The model's top SeFa directions (a fraction of a second: one eigendecomposition of w_dim x w_dim)."""
    sampler = cache.get(request.model.file_key).sampler
    try:
        layers = normalise_layers(request.layers)
        found = sefa(sampler.G, layers, min(request.k, sampler.config.w_dim))
    except GanError as exc:
        raise RenderError("layers", str(exc)) from None
    vectors = np.stack([d.vector for d in found]).astype("<f4")
    return FoundDirections(
        layers=layers,
        values=[float(d.value or 0.0) for d in found],
        vectors=vectors.tobytes(),
        w_dim=sampler.config.w_dim,
    )


def render(
    request: SampleRequest | WRequest | MixRequest,
    cache: ModelCache,
    batcher: MicroBatcher,
    timeout_s: float,
) -> RenderedImage:
    """Run one request through the batcher; RenderError (naming the field) for what the model refuses."""
    started = time.monotonic()
    model = cache.get(request.model.file_key)
    sampler = model.sampler
    image = request.image
    try:
        sampler.transform(image.translate, image.rotate)  # refuses translate/rotate on StyleGAN2
    except GanError as exc:
        raise RenderError("translate" if image.translate is not None else "rotate", str(exc)) from None

    if isinstance(request, SampleRequest):
        ws, noise_seed = _seed_ws(sampler, request.seed, request, "seed"), request.seed
    elif isinstance(request, WRequest):
        ws, noise_seed = decode_w(request.w, sampler.num_ws, sampler.config.w_dim, "w"), 0
    else:
        ws, noise_seed = _mix_ws(sampler, request)
    # Edits move the ws after truncation (and after mixing), as gan.editing defines them.
    ws = apply_offsets(ws, decode_edits(image.edits, sampler.num_ws, sampler.config.w_dim))

    group = SynthesisGroup(model.file_key, image.noise, image.translate, image.rotate)
    result = batcher.submit(group, sampler, ws.to(torch.float32), noise_seed).result(timeout=timeout_s)
    height, width = result.image.shape[:2]
    encode_started = time.monotonic()
    data = encode_image(result.image, request.format)
    finished = time.monotonic()
    return RenderedImage(
        data=data,
        content_type=CONTENT_TYPES[request.format],
        batch_size=result.batch_size,
        width=int(width),
        height=int(height),
        timings=RenderTimings(
            batch_wait_s=result.waited_s,
            synthesis_s=result.synthesis_s,
            encode_s=finished - encode_started,
            worker_s=finished - started,
        ),
    )
