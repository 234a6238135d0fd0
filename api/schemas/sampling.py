"""Wire format of sampling, mixing, mix grids and videos.

The synchronous images take their options as query parameters, declared once here as query models
(`ImageQuery`, `ProjectionImageQuery`, `MixQuery`, used as `Annotated[..., Query()]`; FastAPI lists each
field as a query parameter in OpenAPI); the job requests are the bodies below. Defaults follow the
official scripts except psi: over HTTP it is 0.7, the truncation that "this person does not exist" style
sampling uses (the commands default to 1).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from api.schemas.edits import EditQuery, EditText, SweepIn
from api.schemas.jobs import WEBHOOK_URL_FIELD
from gan.vocabulary import NoiseMode
from worker.wire import MAX_INT64, Name, Seed, WireModel

# Truncation beyond +-2 extrapolates far outside anything the generator was trained to produce.
PSI_MIN, PSI_MAX = -2.0, 2.0
DEFAULT_PSI = 0.7
# Rows or columns of one mix grid, seeds of one walk: a grid of 16 x 16 at 1024 px is already 280 MP.
MAX_GRID_SIDE = 16
MAX_WALK_SEEDS = 64
MAX_FPS = 120.0


# --- query models of the synchronous images --------------------------------------------------------------
# No extra="forbid" here: unknown query parameters are refused app-wide, with a detail listing the
# route's own (api.deps.reject_unknown_query_params, which reads these models' fields by alias).


class _NoiseQuery(WireModel):
    noise: NoiseMode = Field(
        default="const", description="Noise inputs: const, random (seeded by the image's seed) or none."
    )


class _TransformQuery(WireModel):
    # A string, parsed by the service, so that a malformed pair is a 422 saying what a pair looks like.
    translate: str | None = Field(
        default=None, max_length=100, description="StyleGAN3 only: `x,y`.", examples=["0.3,-0.1"]
    )
    rotate: float | None = Field(default=None, description="StyleGAN3 only: degrees.")


class _TruncationQuery(WireModel):
    psi: float = Field(default=DEFAULT_PSI, ge=PSI_MIN, le=PSI_MAX, description="Truncation psi.")
    cutoff: int | None = Field(
        default=None, ge=1, le=MAX_INT64, description="Truncate only the first `cutoff` ws (default: all)."
    )
    class_idx: int | None = Field(
        default=None, alias="class", ge=0, le=MAX_INT64, description="Class, for conditional models only."
    )


class ImageQuery(_TransformQuery, _NoiseQuery, _TruncationQuery, EditQuery):
    """The options of a seed's image: truncation, noise and the StyleGAN3 input transform."""


class ProjectionImageQuery(_TransformQuery, _NoiseQuery, EditQuery):
    """A projected w is rendered as it is: no truncation, no class (both are in the w already)."""


class MixQuery(_NoiseQuery, _TruncationQuery, EditQuery):
    """Style mixing of two latents, each a seed or `w:<projection id>`."""

    row: str = Field(max_length=50, description="A seed or `w:<projection id>`.", examples=["42"])
    col: str = Field(max_length=50, description="A seed or `w:<projection id>`.", examples=["1234"])
    styles: str = Field(
        default="coarse",
        max_length=200,
        description="ws indices from `col`: `0-3`, `0,1,5-7`, `coarse`, `middle`, `fine`.",
    )


# --- job bodies -----------------------------------------------------------------------------------------


class _Truncation(WireModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    psi: float = Field(default=DEFAULT_PSI, ge=PSI_MIN, le=PSI_MAX, description="Truncation psi.")
    cutoff: int | None = Field(
        default=None, ge=1, le=MAX_INT64, description="Truncate only the first `cutoff` ws (default: all)."
    )
    noise: NoiseMode = Field(default="const", description="Noise inputs (StyleGAN2; no effect on StyleGAN3).")
    class_idx: int | None = Field(
        default=None,
        ge=0,
        le=MAX_INT64,
        alias="class",
        description="Class index; required by conditional models only.",
    )


class MixGridCreate(_Truncation):
    """A style-mixing grid as `stylegan mix` writes grid.png: column seeds on top, row seeds down the
    left, each cell the row seed with the `styles` ws of the column seed."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [{"rows": [0, 42], "cols": [1, 7, 1234], "styles": "coarse", "psi": 0.7}]
        },
    )

    rows: list[Seed] = Field(min_length=1, max_length=MAX_GRID_SIDE, description="Row seeds.")
    webhook_url: Name | None = WEBHOOK_URL_FIELD
    cols: list[Seed] = Field(min_length=1, max_length=MAX_GRID_SIDE, description="Column seeds.")
    styles: str = Field(
        default="0-6",
        min_length=1,
        max_length=200,
        description="ws indices taken from the columns: `0-6`, `0,1,5-7`, or `coarse`, `middle`, `fine`.",
    )


class VideoCreate(_Truncation):
    """A latent walk through seeds (slerp in z, lerp in w), optionally moving a StyleGAN3 model's input
    along a translate/rotate path."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {"seeds": [0, 1, 2], "frames": 60, "fps": 30, "space": "w", "format": "mp4", "loop": True},
                {
                    "seeds": [7],
                    "frames": 48,
                    "format": "gif",
                    "fps": 24,
                    "translate": [[-0.2, 0], [0.2, 0]],
                    "rotate": [0, 30],
                },
            ]
        },
    )

    seeds: list[Seed] = Field(
        min_length=1, max_length=MAX_WALK_SEEDS, description="Key seeds, in walk order."
    )
    webhook_url: Name | None = WEBHOOK_URL_FIELD
    frames: int = Field(
        default=60, ge=1, le=MAX_INT64, description="Frames in all (at most STYLEGAN_VIDEO_MAX_FRAMES)."
    )
    fps: float = Field(default=30.0, gt=0, le=MAX_FPS, description="Frames per second (GIF: at most 50).")
    space: Literal["w", "z"] = "w"
    format: Literal["mp4", "gif", "webp"] = "mp4"
    loop: bool = Field(default=False, description="Walk back from the last seed to the first.")
    translate: tuple[tuple[float, float], tuple[float, float]] | None = Field(
        default=None, description="StyleGAN3 only: [[x0, y0], [x1, y1]], the input's move along the walk."
    )
    rotate: tuple[float, float] | None = Field(
        default=None, description="StyleGAN3 only: [deg0, deg1], the input's turn along the walk."
    )
    edit: list[EditText] = Field(
        default_factory=list, max_length=8, description="Edits `ID:STRENGTH[@RANGE]` applied to every frame."
    )
    sweep: SweepIn | None = Field(
        default=None,
        description="Move along one direction over the walk, strength `start` to `stop` (with one seed: "
        "the classic editing clip).",
    )
    start_projection: str | None = Field(
        default=None,
        max_length=36,
        description="Start the walk at the w a projection found (its id; space w), then go through the seeds.",
    )
