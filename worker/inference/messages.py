"""The messages of the `stylegan.render` task: what the API asks the inference worker, and its answer.

Both sides use these models. The API builds a request model and sends `model_dump(mode="json")`
(Celery carries JSON); the worker validates the payload with `RENDER_REQUEST` before it touches a model,
and answers with a `RenderedImage` or, for a request it refuses, a `Refusal` naming the field, which
the API turns into a 422. The request kinds are told apart by `op`, the replies by `outcome`:

    {"op": "sample", "model": {"file_key": "models/<sha256>.safetensors"}, "format": "png",
     "image": {"psi": 0.7, "cutoff": null, "noise": "const", "class_idx": null,
               "translate": null, "rotate": null},
     "seed": 42}
    {"op": "w", ..., "w": <base64 of [num_ws, w_dim] little-endian float32>}
    {"op": "mix", ..., "row": {"seed": 3} | {"w": <base64>}, "col": ..., "styles": "coarse"}
    {"op": "sefa", "model": ..., "layers": "coarse", "k": 64}

Any image request can carry edits (`image.edits`): each one an offset to add to some ws after truncation
(`gan.editing.Offset`), resolved by the API from the direction, strength and layer range the user named,
so the worker needs no database. A `sefa` request asks for the model's SeFa directions over a layer range
and is answered with `FoundDirections`.

Bytes (images, projected ws) travel as base64: a float32 w is four bytes a number, where JSON lists of
decimals would be about five times larger.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from gan.errors import ConfigError
from gan.vocabulary import ImageFormat, NoiseMode, check_image_format, check_noise_mode, check_seed

T = TypeVar("T")


def _vocabulary(check: Callable[[Any], T]) -> Callable[[Any], T]:
    """A `gan.vocabulary` check as a pydantic validator: its ConfigError becomes a validation error
    (pydantic lets other exceptions escape), with the vocabulary's own message."""

    def validate(value: Any) -> T:
        try:
            return check(value)
        except ConfigError as exc:
            raise PydanticCustomError("vocabulary", "{reason}", {"reason": str(exc)}) from None

    return validate


def _from_base64(value: Any) -> Any:
    # A str is the JSON form; bytes are already raw (a model built in-process).
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise PydanticCustomError("base64", "not valid base64") from None
    return value


def _to_base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


# Raw bytes in Python, base64 text in JSON (both directions).
Base64Bytes = Annotated[
    bytes, BeforeValidator(_from_base64), PlainSerializer(_to_base64, return_type=str, when_used="json")
]
Seed = Annotated[int, AfterValidator(_vocabulary(check_seed))]
Noise = Annotated[NoiseMode, BeforeValidator(_vocabulary(check_noise_mode))]
Format = Annotated[ImageFormat, BeforeValidator(_vocabulary(check_image_format))]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Message(BaseModel):
    # Frozen: a message is a value. extra="forbid": a field one side adds and the other ignores would
    # be a request silently answered as another.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRef(_Message):
    """The generator to render with: its storage key names its bytes (`models/<sha256>.safetensors`),
    so the worker's cache never serves a stale model."""

    file_key: str = Field(min_length=1)


MAX_EDITS = 8


class EditOffset(_Message):
    """Add `delta` ([w_dim] little-endian float32: strength x scale x direction) to the ws at `indices`."""

    delta: Base64Bytes
    indices: tuple[Annotated[int, Field(ge=0)], ...] = Field(min_length=1, max_length=64)

    @classmethod
    def from_array(cls, delta: np.ndarray, indices: tuple[int, ...]) -> EditOffset:
        return cls(delta=np.ascontiguousarray(delta, dtype="<f4").tobytes(), indices=indices)


class ImageOptions(_Message):
    """What decides the pixels besides the latent. The API checks these against the model's row (class,
    cutoff range, StyleGAN3-only options) before sending; the worker checks them against the model."""

    psi: Finite = 1.0
    cutoff: int | None = Field(default=None, ge=1)
    noise: Noise = "const"
    class_idx: int | None = Field(default=None, ge=0)
    translate: tuple[Finite, Finite] | None = None  # StyleGAN3 only
    rotate: Finite | None = None  # StyleGAN3 only, degrees
    edits: tuple[EditOffset, ...] = Field(default=(), max_length=MAX_EDITS)


# --- latents -------------------------------------------------------------------------------------------


class SeedLatent(_Message):
    """The ws `stylegan generate` maps for this seed (truncated with the request's psi and cutoff)."""

    seed: Seed


class WLatent(_Message):
    """A w found by a projection, [num_ws, w_dim] little-endian float32, used as it is (no truncation:
    it already is the w the projection found)."""

    w: Base64Bytes

    @classmethod
    def from_array(cls, w: np.ndarray) -> WLatent:
        return cls(w=encode_w(w))


def encode_w(w: np.ndarray) -> bytes:
    """[num_ws, w_dim] -> the bytes a WLatent carries."""
    return np.ascontiguousarray(w, dtype="<f4").tobytes()


def _latent_kind(value: Any) -> str | None:
    # Tell the kinds apart by their one key, so that a bad seed is reported as a bad seed, not also as
    # a missing w.
    if isinstance(value, dict):
        return "seed" if "seed" in value else "w" if "w" in value else None
    return "seed" if isinstance(value, SeedLatent) else "w" if isinstance(value, WLatent) else None


Latent = Annotated[
    Annotated[SeedLatent, Tag("seed")] | Annotated[WLatent, Tag("w")],
    Discriminator(
        _latent_kind,
        custom_error_type="latent",
        custom_error_message="expected a seed ({'seed': n}) or a projected w ({'w': base64})",
    ),
]


# --- requests ------------------------------------------------------------------------------------------


class _Render(_Message):
    model: ModelRef
    image: ImageOptions = ImageOptions()
    format: Format = "png"


class SampleRequest(_Render):
    """The image of a seed: the pixels `stylegan generate` writes."""

    op: Literal["sample"] = "sample"
    seed: Seed


class WRequest(_Render):
    """The image of a projected w ([num_ws, w_dim] float32 bytes, as in WLatent)."""

    op: Literal["w"] = "w"
    w: Base64Bytes


class MixRequest(_Render):
    """Style mixing: the row's ws with the `styles` ws of the column, after truncation (`stylegan mix`).

    `styles` is parsed by the worker (`gan.mixing.parse_styles`): named bands depend on the model.
    """

    op: Literal["mix"] = "mix"
    row: Latent
    col: Latent
    styles: str = Field(min_length=1, max_length=200)


class SefaRequest(_Message):
    """The model's top `k` SeFa directions over a layer range (`gan.editing.sefa`)."""

    op: Literal["sefa"] = "sefa"
    model: ModelRef
    layers: str = Field(min_length=1, max_length=20)
    k: int = Field(ge=1, le=1024)


RenderRequest = Annotated[SampleRequest | WRequest | MixRequest | SefaRequest, Field(discriminator="op")]
RENDER_REQUEST: TypeAdapter[SampleRequest | WRequest | MixRequest | SefaRequest] = TypeAdapter(RenderRequest)


# --- replies -------------------------------------------------------------------------------------------


class RenderTimings(_Message):
    """Where the worker spent an image's time, in seconds (the API's `Server-Timing` header)."""

    batch_wait_s: Finite = Field(ge=0)  # arrival at the micro-batcher -> its forward pass starting
    synthesis_s: Finite = Field(ge=0)  # the forward pass of its batch
    encode_s: Finite = Field(ge=0)  # PNG/JPEG/WebP encoding of this image
    worker_s: Finite = Field(ge=0)  # the whole request in the worker, the three above included


class RenderedImage(_Message):
    outcome: Literal["image"] = "image"
    data: Base64Bytes  # the encoded image (PNG, JPEG or WebP)
    content_type: str
    batch_size: int = Field(ge=1)  # rows in the forward pass it came from (the API's X-Batch-Size)
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    timings: RenderTimings | None = None


class FoundDirections(_Message):
    """SeFa's answer: eigenvalues, descending, and the unit eigenvectors as [k, w_dim] float32 bytes."""

    outcome: Literal["directions"] = "directions"
    layers: str  # the range in its one spelling (`gan.editing.normalise_layers`)
    values: list[float]
    vectors: Base64Bytes
    w_dim: int = Field(ge=1)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(values [k], vectors [k, w_dim])."""
        vectors = np.frombuffer(self.vectors, dtype="<f4").reshape(len(self.values), self.w_dim)
        return np.asarray(self.values, dtype=np.float64), vectors.astype(np.float32)


class Refusal(_Message):
    """A request the model or the message check refuses; `field` names the request field at fault
    (`seed`, `noise`, `styles`, `row`, ...), `detail` says why, for the user."""

    outcome: Literal["refused"] = "refused"
    field: str
    detail: str


RenderReply = Annotated[RenderedImage | FoundDirections | Refusal, Field(discriminator="outcome")]
RENDER_REPLY: TypeAdapter[RenderedImage | FoundDirections | Refusal] = TypeAdapter(RenderReply)


def refusal_from(error: ValidationError) -> Refusal:
    """The first error of a request that failed validation, as a Refusal naming its field.

    The field is the request's own name for it: `noise`, not `image.noise`; `row`, not `row.seed`.
    """
    first = error.errors(include_url=False)[0]
    loc = [str(part) for part in first["loc"]]
    # loc is [op tag, field, ...] for a known op: ["sample", "image", "noise"], ["mix", "row", "seed",
    # "seed"]; an unknown or missing op fails on the discriminator itself and names "op".
    if len(loc) <= 1 or first["type"].startswith("union_tag"):
        return Refusal(field="op", detail=first["msg"])
    path = loc[1:]
    if path[0] == "image" and len(path) > 1:
        path = path[1:]
    return Refusal(field=path[0], detail=first["msg"])
