"""Editing directions behind /v1/models/{id}/directions, the `edit=` of every sampling route, edit
grids and video sweeps.

SeFa's directions are computed by the inference worker that holds the model (a `sefa` request, well
under a second) the first time anyone asks for a layer range, then read from the database
(worker/directions.py). An edit that names a SeFa direction not computed yet (`sefa-fine-2` typed into a
URL before anyone listed them) computes it the same way, so every SeFa id is usable at once.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from fastapi import FastAPI
from sqlalchemy.orm import Session

from api.errors import InvalidRequest, NotFound, naming
from api.schemas.directions import DirectionOut, EditGridCreate, GanSpaceCreate, UserDirectionCreate
from api.schemas.edits import MAX_STRENGTH, SweepIn
from api.schemas.jobs import JobCreate
from api.services import jobs as job_service
from api.services.sampling import ImageParams, ResolvedEdit, ask_inference, check_model_params
from gan.config import GeneratorConfig
from gan.editing import (
    Direction,
    Method,
    direction_id,
    layer_indices,
    normalise_layers,
    offsets,
    parse_edit,
    user_direction,
)
from gan.editing import resolve_edits as resolve_specs
from gan.errors import GanError
from worker.db.models import Model, StoredDirection
from worker.directions import (
    SEFA_STORED,
    delete_direction,
    list_directions,
    lookup,
    replace_directions,
    store_sefa,
)
from worker.inference.messages import EditOffset, FoundDirections, ModelRef, SefaRequest
from worker.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

    from worker.db.models import Job

# A .npy of one w_dim vector is a few kilobytes; anything much larger is not a direction.
MAX_NPY_BYTES = 1 << 20


def model_config(model: Model) -> GeneratorConfig:
    if not model.config:
        raise InvalidRequest(
            f"model {model.id}: its record lacks the network configuration that editing needs"
        )
    return GeneratorConfig.from_dict(model.config)


def direction_out(row: StoredDirection, d: Direction) -> DirectionOut:
    return DirectionOut(
        id=d.id,
        method=d.method,
        layers=d.layers,
        rank=d.rank,
        eigenvalue=d.value if d.method == "sefa" else None,
        variance=d.value if d.method == "ganspace" else None,
        sigma=d.sigma,
        name=d.id if d.method == "user" else None,
        vector=[float(v) for v in d.vector],
        created_at=row.created_at,
    )


# --- SeFa ---------------------------------------------------------------------------------------------


def ensure_sefa(app: FastAPI, session: Session, model: Model, layers: str, owner_key: str | None) -> str:
    """Compute and store the model's SeFa directions for `layers` unless stored; their range's spelling."""
    with naming("query layers", got=layers):
        name = normalise_layers(layers)
        layer_indices(name, model_config(model))  # a range the model does not have: 422 before any work
    if list_directions(session, model.id, None, method="sefa", layers=name):
        return name
    reply = ask_inference(
        app,
        owner_key,
        SefaRequest(model=ModelRef(file_key=model.file_key), layers=name, k=SEFA_STORED),
        session=session,
    )
    assert isinstance(reply, FoundDirections), "a sefa request answered with an image"
    values, vectors = reply.arrays()
    found = [
        Direction(direction_id("sefa", name, rank), "sefa", name, rank, vectors[rank], float(values[rank]))
        for rank in range(len(values))
    ]
    store_sefa(session, model.id, found)
    return name


def directions(
    app: FastAPI, session: Session, model: Model, method: Method, layers: str, k: int, owner_key: str | None
) -> list[DirectionOut]:
    """The model's directions of one method, top `k` by rank (SeFa: of one layer range)."""
    if method == "sefa":
        name = ensure_sefa(app, session, model, layers, owner_key)
        found = list_directions(session, model.id, owner_key, method="sefa", layers=name)
    else:
        found = list_directions(session, model.id, owner_key, method=method)
    return [direction_out(row, d) for row, d in found[:k]]


def _sefa_layers(name: str) -> str | None:
    """`sefa-coarse-0` -> `coarse`, `sefa-0-3-2` -> `0-3`; None for other ids."""
    if not name.startswith("sefa-"):
        return None
    prefix, _, rank = name.rpartition("-")
    return prefix.removeprefix("sefa-") if rank.isdigit() and prefix.startswith("sefa-") else None


# --- edits ----------------------------------------------------------------------------------------------


def resolve(
    app: FastAPI,
    session: Session,
    model: Model,
    texts: Sequence[str],
    owner_key: str | None,
    where: str = "query",
) -> tuple[ResolvedEdit, ...]:
    """`edit=` texts -> edits made concrete for this model; 422 naming `edit` for anything wrong."""
    if not texts:
        return ()
    field = f"{where} edit"
    with naming(field):
        specs = [parse_edit(text) for text in texts]
        for spec in specs:
            if abs(spec.strength) > MAX_STRENGTH:
                raise GanError(
                    f"strength {spec.strength:g} of {spec.id!r} is outside [-{MAX_STRENGTH:g}, {MAX_STRENGTH:g}]"
                )
    found = lookup(session, model.id, [s.id for s in specs], owner_key)
    for spec in specs:
        layers = _sefa_layers(spec.id)
        if spec.id not in found and layers is not None:
            try:
                ensure_sefa(app, session, model, layers, owner_key)
            except InvalidRequest:
                continue  # a range the model does not have: reported below as an unknown direction
    found = lookup(session, model.id, [s.id for s in specs], owner_key)
    with naming(field):
        edits = resolve_specs(specs, found)
        concrete = offsets(edits, model_config(model))
    return tuple(
        ResolvedEdit(edit.spec(), _digest(edit.direction.vector), EditOffset.from_array(o.delta, o.indices))
        for edit, o in zip(edits, concrete, strict=True)
    )


def with_edits(
    app: FastAPI,
    session: Session,
    model: Model,
    params: ImageParams,
    texts: Sequence[str],
    owner_key: str | None,
) -> ImageParams:
    if not texts:
        return params
    return ImageParams(
        psi=params.psi,
        cutoff=params.cutoff,
        noise=params.noise,
        class_idx=params.class_idx,
        translate=params.translate,
        rotate=params.rotate,
        edits=resolve(app, session, model, texts, owner_key),
    )


def check_sweep(
    app: FastAPI, session: Session, model: Model, sweep: SweepIn | None, owner_key: str | None
) -> None:
    """A video's sweep names a direction of this model and a range it has (422 naming `sweep`)."""
    if sweep is None:
        return
    text = f"{sweep.direction}:0" + (f"@{sweep.layers}" if sweep.layers else "")
    try:
        resolve(app, session, model, [text], owner_key, where="body")
    except InvalidRequest as exc:
        raise InvalidRequest(str(exc.detail).replace("body edit", "body sweep", 1)) from None


def _digest(vector: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vector, dtype="<f4").tobytes()).hexdigest()[:16]


# --- a user's own, and GANSpace jobs ---------------------------------------------------------------------


def store_user_direction(
    session: Session, model: Model, body: UserDirectionCreate, owner_key: str | None
) -> DirectionOut:
    config = model_config(model)
    with naming("body name", got=body.name):
        if body.name.startswith(("sefa", "ganspace")):
            raise GanError("names starting with sefa or ganspace are kept for computed directions")
    with naming("body vector"):
        direction = user_direction(body.name, body.vector, config.w_dim, "all")
    with naming("body layers", got=body.layers):
        layers = normalise_layers(body.layers)
        layer_indices(layers, config)
    direction = Direction(direction.id, "user", layers, 0, direction.vector)
    [row] = replace_directions(session, model.id, [direction], owner_key)
    return direction_out(row, direction)


def npy_vector(data: bytes) -> list[float]:
    """The numbers of an uploaded .npy (one vector, or [1, w_dim] as InterFaceGAN saves boundaries)."""
    if len(data) > MAX_NPY_BYTES:
        raise InvalidRequest(
            f"body file: {len(data)} bytes is too large for a direction (at most {MAX_NPY_BYTES})"
        )
    # The header is read and checked before any array is made: np.load would take a zip (.npz) for a
    # .npy, and allocates the shape the header declares before it finds the data short.
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not supported")
        if dtype.kind not in "fiu" or dtype.hasobject:
            raise ValueError(f"dtype {dtype} is not a number type")
        if math.prod(shape) * dtype.itemsize > len(data) - stream.tell():
            raise ValueError(f"the header declares shape {shape} of {dtype}, more than the file holds")
        stream.seek(0)
        array = np.lib.format.read_array(stream, allow_pickle=False)
    except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError, TokenError, ...
        raise InvalidRequest(f"body file: not a .npy array ({type(exc).__name__}: {exc})") from None
    if array.squeeze().ndim != 1:
        raise InvalidRequest("body file: expected one vector of numbers ([w_dim] or [1, w_dim])")
    return [float(v) for v in array.reshape(-1)]


def remove_direction(session: Session, model: Model, name: str, owner_key: str | None) -> None:
    if not delete_direction(session, model.id, name, owner_key):
        raise NotFound(f"no GANSpace or user direction {name!r} of this key on model {model.id}")


def submit_ganspace(
    session: Session,
    celery: Celery,
    settings: Settings,
    *,
    model: Model,
    body: GanSpaceCreate,
    owner_key: str | None,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    params = {"model_id": model.id, "samples": body.samples, "k": body.k, "seed": body.seed}
    return job_service.submit_job(
        session,
        celery,
        settings,
        request=JobCreate(kind="ganspace", params=params, webhook_url=body.webhook_url),
        owner_key=owner_key,
        idempotency_key=idempotency_key,
    )


def submit_edit_grid(
    app: FastAPI,
    session: Session,
    celery: Celery,
    settings: Settings,
    *,
    model: Model,
    body: EditGridCreate,
    owner_key: str | None,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    check_model_params(
        model, ImageParams(psi=body.psi, cutoff=body.cutoff, class_idx=body.class_idx), settings, where="body"
    )
    resolve(app, session, model, body.edit, owner_key, where="body")
    text = f"{body.direction}:0" + (f"@{body.layers}" if body.layers else "")
    try:
        resolve(app, session, model, [text], owner_key, where="body")
    except InvalidRequest as exc:
        raise InvalidRequest(str(exc.detail).replace("body edit", "body direction", 1)) from None
    params = body.model_dump(mode="json", by_alias=False, exclude={"webhook_url", "noise"}) | {
        "model_id": model.id
    }
    return job_service.submit_job(
        session,
        celery,
        settings,
        request=JobCreate(kind="edit_grid", params=params, webhook_url=body.webhook_url),
        owner_key=owner_key,
        idempotency_key=idempotency_key,
    )
