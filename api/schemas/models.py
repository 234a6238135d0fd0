"""Model and catalogue wire formats. A Model row becomes a `ModelOut` in `model_out` only."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.schemas.jobs import WEBHOOK_URL_FIELD
from worker.job_kinds import MAX_LICENSE_NOTE_LENGTH, MAX_NAME_LENGTH
from worker.wire import Name, Text, WireModel

if TYPE_CHECKING:
    from worker.catalog import CatalogEntry
    from worker.db.models import Model

ArchitectureName = Literal["stylegan2", "stylegan3-t", "stylegan3-r"]
ModelFormatName = Literal["ours", "official-pkl", "tf-pkl"]

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_EXAMPLE_ID = "5b7f7a4e-1c0d-4a8e-9f55-2f0b6c1d3e21"


class ModelLinks(BaseModel):
    self: str = Field(examples=[f"/v1/models/{_EXAMPLE_ID}"])
    image: str = Field(
        description="A sample image (seed 0); any seed and format: `/v1/models/{id}/images/{seed}.png`.",
        examples=[f"/v1/models/{_EXAMPLE_ID}/images/0.png"],
    )


class ModelOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _EXAMPLE_ID,
                    "name": "metfaces",
                    "architecture": "stylegan2",
                    "resolution": 1024,
                    "img_channels": 3,
                    "z_dim": 512,
                    "w_dim": 512,
                    "c_dim": 0,
                    "num_ws": 18,
                    "num_params": 30370060,
                    "sha256": "c7b0f4e3b1d1f0d5a6c1f0b2e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1",
                    "size_bytes": 121550812,
                    "format": "official-pkl",
                    "source": "upload:metfaces.pkl",
                    "license_note": "NVIDIA Source Code License-NC: ... non-commercially only ...",
                    "demo": False,
                    "created_at": "2026-01-01T12:00:00Z",
                    "links": {
                        "self": f"/v1/models/{_EXAMPLE_ID}",
                        "image": f"/v1/models/{_EXAMPLE_ID}/images/0.png",
                    },
                }
            ]
        }
    )

    id: str
    name: str
    architecture: ArchitectureName
    resolution: int = Field(description="Output images are resolution x resolution pixels.")
    img_channels: int
    z_dim: int
    w_dim: int
    c_dim: int = Field(description="Number of classes of a conditional model; 0 when unconditional.")
    num_ws: int = Field(description="How many w vectors the synthesis network takes (style-mixing layers).")
    num_params: int = Field(description="Parameters of the generator (mapping + synthesis).")
    sha256: str = Field(description="sha256 of the file as uploaded or downloaded (the dedupe key).")
    size_bytes: int = Field(description="Size of the stored file (our safetensors format).")
    format: ModelFormatName = Field(description="The format the file came in; it is stored in ours.")
    source: str = Field(description="Where it came from: `upload:<file>`, `import:<url or catalogue name>`, "
                        "`training:<job id>` or `demo:<file>`.")  # fmt: skip
    license_note: str | None = Field(description="The licence the weights are under, as far as known.")
    demo: bool = Field(description="The bundled demo model: visible to every key, cannot be deleted.")
    created_at: datetime
    links: ModelLinks


class ModelList(BaseModel):
    items: list[ModelOut]
    total: int = Field(description="Models visible to this key (its own and the demo), over all pages.")
    limit: int
    offset: int


class ModelImportRequest(WireModel):
    """JSON body of `POST /v1/models`: import from the catalogue or from a URL, as a job."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"catalog": "stylegan3-r-afhqv2-512x512"},
                {
                    "url": "https://example.org/networks/my-network.pkl",
                    "sha256": "c7b0f4e3b1d1f0d5a6c1f0b2e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1",
                    "name": "my network",
                },
            ]
        },
    )

    catalog: Name | None = Field(default=None, max_length=100, description="A name from `GET /v1/catalog`.")
    url: Name | None = Field(default=None, max_length=2000, description="An http(s) URL of a network file.")
    sha256: str | None = Field(
        default=None, description="With `url`: the expected sha256; a mismatch fails the job."
    )
    name: Name | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)
    webhook_url: Name | None = WEBHOOK_URL_FIELD
    license_note: Text | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_LICENSE_NOTE_LENGTH,
        description="The licence of the weights, if not NVIDIA's non-commercial licence.",
    )

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value):
            raise ValueError("must be 64 hexadecimal digits")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelImportRequest:
        if (self.catalog is None) == (self.url is None):
            raise ValueError("give exactly one of `catalog` or `url`")
        if self.catalog is not None and self.sha256 is not None:
            raise ValueError("`sha256` goes with `url`; a catalogue entry carries its own checksum")
        return self


class CatalogEntryOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "stylegan3-r-afhqv2-512x512",
                    "architecture": "stylegan3-r",
                    "resolution": 512,
                    "url": "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/stylegan3-r-afhqv2-512x512.pkl",
                    "sha256": None,
                    "description": "StyleGAN3-R (translation and rotation equivariant), AFHQv2 at 512x512",
                    "license": "NVIDIA Source Code License-NC",
                    "license_url": "https://github.com/NVlabs/stylegan3/blob/main/LICENSE.txt",
                    "commercial_use": False,
                    "listed_in": "https://github.com/NVlabs/stylegan3#additional-material",
                }
            ]
        }
    )

    name: str
    architecture: ArchitectureName
    resolution: int
    url: str
    sha256: str | None = Field(description="null where the publisher gives no checksum.")
    description: str
    license: str
    license_url: str | None
    commercial_use: bool
    listed_in: str | None = Field(description="Where the entry was transcribed from.")


class CatalogList(BaseModel):
    items: list[CatalogEntryOut]


def model_out(row: Model, *, demo: bool) -> ModelOut:
    """The one place a model row becomes its wire form."""
    return ModelOut(
        id=row.id,
        name=row.name,
        architecture=row.architecture,  # type: ignore[arg-type]  # CHECK constraint keeps it one of these
        resolution=row.resolution,
        img_channels=row.img_channels,
        z_dim=row.z_dim,
        w_dim=row.w_dim,
        c_dim=row.c_dim,
        num_ws=row.num_ws,
        num_params=row.num_params,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        format=row.format,  # type: ignore[arg-type]
        source=row.source,
        license_note=row.license_note,
        demo=demo,
        created_at=row.created_at,
        links=ModelLinks(self=f"/v1/models/{row.id}", image=f"/v1/models/{row.id}/images/0.png"),
    )


def catalog_entry_out(entry: CatalogEntry) -> CatalogEntryOut:
    return CatalogEntryOut(
        name=entry.name,
        architecture=entry.architecture,  # type: ignore[arg-type]  # checked when the catalogue is read
        resolution=entry.resolution,
        url=entry.url,
        sha256=entry.sha256,
        description=entry.description,
        license=entry.license,
        license_url=entry.license_url,
        commercial_use=entry.commercial_use,
        listed_in=entry.listed_in,
    )
