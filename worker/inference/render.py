"""One synchronous image request, as the inference worker runs it: latents -> batcher -> encoded bytes.

A request is a JSON object (the API builds it, see `api.services.sampling`):

    {"op": "sample", "model": {"file_key": ...}, "seed": 42, "psi": 0.7, "cutoff": null,
     "noise": "const", "class": null, "translate": null, "rotate": null, "format": "png"}
    {"op": "mix", "model": {...}, "row": {"seed": 0} | {"w": <base64 float32>}, "col": ...,
     "styles": "coarse", "psi": 0.7, "cutoff": null, "noise": "const", "class": null, "format": "png"}

A seed's ws is what `stylegan generate` maps (`Sampler.ws_for_seeds`); a mix copies the `styles` ws of
the column into the row after truncation, as `stylegan mix` does; a projected w (`{"w": ...}`,
[num_ws, w_dim] float32) is used as it is, since it already is the w the projection found.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from gan.errors import GanError

if TYPE_CHECKING:
    import torch

    from gan.sampling import Sampler
    from worker.inference.batcher import MicroBatcher, RenderResult
    from worker.inference.engine import ModelCache

ImageFormat = Literal["png", "jpg", "webp"]
CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
# Lossy formats: quality 90 keeps faces free of visible blocking at about a fifth of the PNG's bytes.
LOSSY_QUALITY = 90


class RenderError(GanError):
    """A request the model refuses; `field` names the request parameter at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def encode_image(image: np.ndarray, fmt: str) -> bytes:
    """uint8 [H, W, C] -> PNG (lossless), JPEG or WebP (quality LOSSY_QUALITY) bytes."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise GanError(f"expected a uint8 [H, W, 1 or 3] image, got {image.dtype} {image.shape}")
    pil = Image.fromarray(image[:, :, 0], "L") if image.shape[2] == 1 else Image.fromarray(image, "RGB")
    buf = io.BytesIO()
    if fmt == "png":
        pil.save(buf, format="PNG")
    elif fmt == "jpg":
        pil.save(buf, format="JPEG", quality=LOSSY_QUALITY)
    elif fmt == "webp":
        pil.save(buf, format="WEBP", quality=LOSSY_QUALITY)
    else:
        raise GanError(f"unknown image format {fmt!r}: use png, jpg or webp")
    return buf.getvalue()


def encode_w(w: np.ndarray) -> str:
    """A [num_ws, w_dim] latent as base64 float32 (compact in a JSON message)."""
    return base64.b64encode(np.ascontiguousarray(w, dtype="<f4").tobytes()).decode("ascii")


def decode_w(text: str, num_ws: int, w_dim: int, field: str) -> torch.Tensor:
    import torch

    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise RenderError(field, "the projected w is not valid base64") from None
    if len(raw) != num_ws * w_dim * 4:
        raise RenderError(
            field, f"the projected w holds {len(raw) // 4} numbers; this model needs [{num_ws}, {w_dim}]"
        )
    w = np.frombuffer(raw, dtype="<f4").reshape(num_ws, w_dim)
    if not np.isfinite(w).all():
        raise RenderError(field, "the projected w holds non-finite numbers")
    return torch.from_numpy(w.copy())


def _ws_for(
    sampler: Sampler, source: dict[str, Any], request: dict[str, Any], field: str
) -> tuple[torch.Tensor, int]:
    """The [num_ws, w_dim] latent of a seed or a projected w, and the seed its noise is drawn from."""
    if "seed" in source:
        seed = int(source["seed"])
        try:
            ws = sampler.ws_for_seeds(
                [seed],
                psi=float(request["psi"]),
                cutoff=request.get("cutoff"),
                class_idx=request.get("class"),
            )
        except GanError as exc:
            raise RenderError(field, str(exc)) from None
        return ws[0], seed
    if "w" in source:
        return decode_w(source["w"], sampler.num_ws, sampler.config.w_dim, field), 0
    raise RenderError(field, "give a seed or a projected w")


def render(
    request: dict[str, Any], cache: ModelCache, batcher: MicroBatcher, timeout_s: float
) -> dict[str, Any]:
    """Run one request; returns {"data": base64 image, "content_type", "batch_size", "width", "height"}."""
    import torch

    from gan.mixing import parse_styles, style_bands
    from worker.inference.batcher import SynthesisGroup

    fmt = request.get("format", "png")
    if fmt not in CONTENT_TYPES:
        raise RenderError("format", f"unknown image format {fmt!r}: use png, jpg or webp")
    noise = request.get("noise", "const")
    if noise not in ("const", "random", "none"):
        raise RenderError("noise", f"invalid noise mode {noise!r}: use const, random or none")
    model = cache.get(request["model"]["file_key"])
    sampler = model.sampler
    translate = tuple(request["translate"]) if request.get("translate") is not None else None
    rotate = request.get("rotate")
    try:
        sampler.transform(translate, rotate)  # type: ignore[arg-type]  # refuses translate on StyleGAN2
    except GanError as exc:
        raise RenderError("translate" if translate is not None else "rotate", str(exc)) from None

    op = request.get("op")
    if op == "sample":
        ws, noise_seed = _ws_for(sampler, {"seed": request["seed"]}, request, "seed")
    elif op == "w":
        ws, noise_seed = _ws_for(sampler, {"w": request["w"]}, request, "projection")
    elif op == "mix":
        row, row_noise = _ws_for(sampler, request["row"], request, "row")
        col, _ = _ws_for(sampler, request["col"], request, "col")
        try:
            styles = parse_styles(str(request["styles"]), sampler.num_ws, style_bands(sampler.config))
        except GanError as exc:
            raise RenderError("styles", str(exc)) from None
        ws = row.clone()
        ws[styles] = col[styles]  # the row's ws with the chosen styles taken from the column
        noise_seed = row_noise  # as gan.mixing: a mixed image takes its noise from the row seed
    else:
        raise RenderError("op", f"unknown operation {op!r}")

    group = SynthesisGroup(model.file_key, noise, translate, rotate)  # type: ignore[arg-type]
    future = batcher.submit(group, sampler, ws.to(torch.float32), noise_seed)
    result: RenderResult = future.result(timeout=timeout_s)
    data = encode_image(result.image, fmt)
    height, width = result.image.shape[:2]
    return {
        "data": base64.b64encode(data).decode("ascii"),
        "content_type": CONTENT_TYPES[fmt],
        "batch_size": result.batch_size,
        "width": int(width),
        "height": int(height),
    }
