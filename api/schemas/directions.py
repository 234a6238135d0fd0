"""Wire format of editing directions: listing them, adding a GANSpace run or a user's own, edit grids,
and the `edit` query parameter every sampling route takes (gan/editing.py has the meaning)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas.edits import MAX_STRENGTH, EditText
from api.schemas.jobs import WEBHOOK_URL_FIELD
from api.schemas.sampling import MAX_GRID_SIDE, _Truncation
from gan.editing import MAX_EDITS
from gan.errors import ConfigError
from gan.vocabulary import check_seed
from worker.wire import Name, Seed, WireModel

SEFA_MAX_K = 64


class DirectionsQuery(WireModel):
    method: Literal["sefa", "ganspace", "user"] = Field(
        default="sefa", description="sefa (computed on first request), ganspace (after a job), user."
    )
    layers: str = Field(
        default="all",
        max_length=20,
        description="SeFa only: the ws whose layers are factorised: coarse, middle, fine, all or a-b.",
    )
    k: int = Field(default=10, ge=1, le=SEFA_MAX_K, description="How many, by rank.")


class DirectionOut(BaseModel):
    id: str = Field(description="What `edit=ID:STRENGTH` names.", examples=["sefa-coarse-0"])
    method: Literal["sefa", "ganspace", "user"]
    layers: str = Field(description="The ws range it was found for and is applied to by default.")
    rank: int
    eigenvalue: float | None = Field(default=None, description="SeFa: how much it moves the styles.")
    variance: float | None = Field(default=None, description="GANSpace: share of w's variance along it.")
    sigma: float | None = Field(
        default=None, description="GANSpace: standard deviation, one unit of strength."
    )
    name: str | None = Field(default=None, description="A user's direction: its name (= id).")
    vector: list[float] = Field(description="The direction, w_dim numbers.")
    created_at: dt.datetime


class DirectionList(BaseModel):
    items: list[DirectionOut]


class GanSpaceCreate(WireModel):
    """Start a GANSpace job: PCA of `samples` mapped w; the result replaces this key's earlier run."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"method": "ganspace", "samples": 100000, "k": 20}]}
    )

    method: Literal["ganspace"]
    samples: int = Field(default=100_000, ge=1000, le=1_000_000)
    k: int = Field(default=20, ge=1, le=SEFA_MAX_K)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    webhook_url: Name | None = WEBHOOK_URL_FIELD


class UserDirectionCreate(WireModel):
    """Store a direction found elsewhere (e.g. an InterFaceGAN boundary), used as given."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"method": "user", "name": "smile", "vector": [0.1, -0.3], "layers": "all"}]
        },
    )

    method: Literal["user"]
    name: Name = Field(
        min_length=1,
        max_length=48,
        description="Lower-case letters, digits, _ and ., starting with a letter.",
    )
    vector: list[float] = Field(min_length=1, max_length=4096, description="w_dim numbers.")
    layers: str = Field(default="all", max_length=20, description="The default ws range of its edits.")

    @field_validator("vector")
    @classmethod
    def _finite(cls, vector: list[float]) -> list[float]:
        if not all(math.isfinite(v) for v in vector):
            raise ValueError("must hold finite numbers only")
        return vector


class EditGridCreate(_Truncation):
    """Seeds (rows) x strengths (columns) along one direction, as one PNG (a job, kind `edit_grid`)."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [{"direction": "sefa-all-0", "seeds": [0, 1, 2], "strengths": [-6, -3, 0, 3, 6]}]
        },
    )

    direction: str = Field(min_length=1, max_length=100, description="A direction id of this model.")
    seeds: list[Seed] = Field(min_length=1, max_length=MAX_GRID_SIDE)
    strengths: list[float] = Field(min_length=1, max_length=MAX_GRID_SIDE)
    layers: str | None = Field(default=None, max_length=20, description="Override the direction's ws range.")
    edit: list[EditText] = Field(
        default_factory=list, max_length=MAX_EDITS, description="Edits applied to every cell first."
    )
    webhook_url: Name | None = WEBHOOK_URL_FIELD

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        for seed in seeds:
            try:
                check_seed(seed)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return seeds

    @field_validator("strengths")
    @classmethod
    def _strengths(cls, strengths: list[float]) -> list[float]:
        if not all(math.isfinite(s) and abs(s) <= MAX_STRENGTH for s in strengths):
            raise ValueError(f"strengths must be finite numbers in [-{MAX_STRENGTH:g}, {MAX_STRENGTH:g}]")
        return strengths
