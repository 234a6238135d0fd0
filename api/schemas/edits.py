"""The edit parameters that every sampling route and the video job take (gan/editing.py has the meaning);
api/schemas/directions.py has the directions themselves."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from gan.editing import MAX_EDITS
from worker.wire import WireModel

EditText = Annotated[str, Field(min_length=3, max_length=200)]
EDIT_DESCRIPTION = (
    "An edit `ID:STRENGTH`, or `ID:STRENGTH@RANGE` to apply it to other ws (`coarse`, `middle`, `fine`, "
    "`all`, `a-b`); repeat for up to 8. IDs come from `GET /v1/models/{id}/directions`; GANSpace "
    "strengths are in standard deviations."
)
MAX_STRENGTH = 100.0


class EditQuery(WireModel):
    """The `edit` query parameter, shared by every sampling route."""

    edit: list[EditText] = Field(
        default_factory=list,
        max_length=MAX_EDITS,
        description=EDIT_DESCRIPTION,
        examples=[["sefa-coarse-0:2.5"]],
    )


class SweepIn(WireModel):
    """A video's move along one direction (with one seed: the classic editing clip)."""

    model_config = ConfigDict(extra="forbid")

    direction: str = Field(min_length=1, max_length=100)
    start: float = Field(default=-3.0, ge=-MAX_STRENGTH, le=MAX_STRENGTH, allow_inf_nan=False)
    stop: float = Field(default=3.0, ge=-MAX_STRENGTH, le=MAX_STRENGTH, allow_inf_nan=False)
    layers: str | None = Field(default=None, max_length=20)
