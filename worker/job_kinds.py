"""The kinds of job the service runs: for each, its queue, the schema of its params and whether the
generic `POST /v1/jobs` may queue it. Below the job state machine (worker/jobs.py validates params with
this table before it writes a row) and below the handlers (worker/tasks/, which read their params with
these schemas), so the one definition of a job's inputs is shared by the API, the database and the
worker without either importing the other.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gan.vocabulary import MAX_SEED, METRIC_EXAMPLES, METRIC_NAME, NoiseMode, PresetName
from worker.wire import MAX_INT64, Name, Seed, Text, WireModel

QueueName = Literal["inference", "training"]
QUEUES: tuple[QueueName, ...] = ("inference", "training")

MAX_NAME_LENGTH = 200  # models.name is String(200)
MAX_LICENSE_NOTE_LENGTH = 2000
# Uploaded projection targets live under this prefix, named by their sha256 (api/services/projections.py).
PROJECTION_UPLOAD_PREFIX = "uploads/projections"
PROJECTION_IMAGE_KEY = re.compile(rf"^{PROJECTION_UPLOAD_PREFIX}/[0-9a-f]{{64}}\.(png|jpg|webp)$")
# Staged dataset uploads: an unguessable token the API made (api/services/datasets.py).
DATASET_UPLOAD_KEY = re.compile(r"^uploads/[0-9a-f]{32}/source\.zip$")
DatasetTransform = Literal["center-crop", "center-crop-wide", "pad"]
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


# Ranks one training job may ask for. They all run on the worker's host (one per GPU under CUDA), and no
# single host has more GPUs than this; a larger number could only wait in the queue and then fail.
MAX_TRAINING_GPUS = 16

# --- params, one schema per kind -----------------------------------------------------------------------

# A probe is a diagnostic, not a way to park a worker: an hour is far beyond any test or check.
MAX_PROBE_SECONDS = 3600.0


class ProbeParams(WireModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    seconds: float = Field(default=0.0, ge=0.0, le=MAX_PROBE_SECONDS)
    queue: QueueName = "inference"
    fail_message: Text | None = Field(default=None, min_length=1, max_length=1000)

    @field_validator("seconds", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        # Strict mode refuses ints for a float field; an int number of seconds is fine, a bool is not.
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


class MixGridParams(WireModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=36)
    rows: list[Seed] = Field(min_length=1, max_length=16)
    cols: list[Seed] = Field(min_length=1, max_length=16)
    styles: Name = Field(default="0-6", min_length=1, max_length=200)
    psi: float = Field(default=0.7, ge=-2.0, le=2.0)
    cutoff: int | None = Field(default=None, ge=1, le=MAX_INT64)
    noise: NoiseMode = "const"
    class_idx: int | None = Field(default=None, ge=0, le=MAX_INT64)


class SweepParams(WireModel):
    """A video's move along one direction: strength from `start` to `stop` over the frames."""

    model_config = ConfigDict(extra="forbid")
    direction: str = Field(min_length=1, max_length=100)
    start: float = Field(default=-3.0, ge=-100, le=100, allow_inf_nan=False)
    stop: float = Field(default=3.0, ge=-100, le=100, allow_inf_nan=False)
    layers: str | None = Field(default=None, min_length=1, max_length=20)


class VideoParams(WireModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=36)
    seeds: list[Seed] = Field(min_length=1, max_length=64)
    frames: int = Field(default=60, ge=1, le=MAX_INT64)
    fps: float = Field(default=30.0, gt=0, le=120)
    space: Literal["w", "z"] = "w"
    format: Literal["mp4", "gif", "webp"] = "mp4"
    loop: bool = False
    psi: float = Field(default=0.7, ge=-2.0, le=2.0)
    cutoff: int | None = Field(default=None, ge=1, le=MAX_INT64)
    noise: NoiseMode = "const"
    class_idx: int | None = Field(default=None, ge=0, le=MAX_INT64)
    translate: tuple[tuple[float, float], tuple[float, float]] | None = None
    rotate: tuple[float, float] | None = None
    edit: list[str] = Field(default_factory=list, max_length=8)  # ID:STRENGTH[@RANGE], every frame
    sweep: SweepParams | None = None
    start_projection: str | None = Field(default=None, min_length=1, max_length=36)


class GanSpaceParams(WireModel):
    """GANSpace on a model: PCA of `samples` mapped w (gan.editing.ganspace)."""

    model_config = ConfigDict(extra="forbid")
    model_id: str = Field(min_length=1, max_length=36)
    samples: int = Field(default=100_000, ge=100, le=1_000_000)
    k: int = Field(default=20, ge=1, le=64)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)


class EditGridParams(WireModel):
    """Seeds (rows) x strengths (columns) along one direction, as one PNG."""

    model_config = ConfigDict(extra="forbid")
    model_id: str = Field(min_length=1, max_length=36)
    direction: str = Field(min_length=1, max_length=100)
    seeds: list[Seed] = Field(min_length=1, max_length=16)
    strengths: list[float] = Field(min_length=1, max_length=16)
    layers: str | None = Field(default=None, min_length=1, max_length=20)
    edit: list[str] = Field(default_factory=list, max_length=8)  # applied to every cell first
    psi: float = Field(default=0.7, ge=-2.0, le=2.0, allow_inf_nan=False)
    cutoff: int | None = Field(default=None, ge=1, le=2**63 - 1)
    class_idx: int | None = Field(default=None, ge=0, le=2**63 - 1)


class ModelImportParams(WireModel):
    model_config = ConfigDict(extra="forbid")

    url: Name = Field(min_length=1, max_length=2000, description="http(s) URL of the network file.")
    sha256: str | None = Field(default=None, description="Expected sha256 of the downloaded bytes.")
    name: Name | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)
    catalog: Name | None = Field(default=None, max_length=100, description="The catalogue entry, if any.")
    license_note: Text | None = Field(default=None, min_length=1, max_length=MAX_LICENSE_NOTE_LENGTH)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"only http and https URLs can be imported, got scheme {scheme or 'none'!r}")
        return url

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value):
            raise ValueError("must be 64 hexadecimal digits")
        # Hex digits name the same bytes in either case; the comparison uses lower case.
        return value.lower() if value is not None else None


class ProjectionParams(WireModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=36)
    image_key: str = Field(description="storage key of the uploaded target")
    space: Literal["w", "w+"] = "w"
    steps: int = Field(default=1000, ge=1, le=100_000)
    seed: int = Field(default=303, ge=0, le=MAX_SEED)
    save_video: bool = False
    class_idx: int | None = Field(default=None, ge=0, le=MAX_INT64)

    @field_validator("image_key")
    @classmethod
    def _uploaded_target(cls, key: str) -> str:
        # Only the upload area: a job must not be pointed at another key's model or artifact file.
        if not PROJECTION_IMAGE_KEY.match(key):
            raise ValueError(
                f"must be a projection upload key ({PROJECTION_UPLOAD_PREFIX}/<sha256>.png|jpg|webp)"
            )
        return key


class DatasetPrepareParams(WireModel):
    """What the API hands the job: where the staged upload is, and how to prepare it."""

    model_config = ConfigDict(extra="forbid")

    upload_key: str = Field(description="Storage key of the staged upload (uploads/<hex>/source.zip).")
    name: Name = Field(min_length=1, max_length=200)
    resolution: int | None = Field(default=None, ge=4, le=8192)
    transform: DatasetTransform = "center-crop"
    labels: dict[str, Any] | None = None

    @field_validator("upload_key")
    @classmethod
    def _staged(cls, key: str) -> str:
        # Only keys the API itself made (an unguessable token): a job cannot be pointed at other files.
        if not DATASET_UPLOAD_KEY.match(key):
            raise ValueError("must be a staged upload key uploads/<32 hex>/source.zip")
        return key

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, value: int | None) -> int | None:
        if value is not None and value & (value - 1):
            raise ValueError(f"must be a power of two, got {value}")
        return value


class TrainingParams(WireModel):
    """A training request, as stored in the job row. Defaults follow the official train.py where it has
    one; `snap` is smaller, because a checkpoint is also what a replaced worker resumes from."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(min_length=1, max_length=36)
    base_model_id: str | None = Field(default=None, min_length=1, max_length=36)
    cfg: PresetName | None = None
    kimg: float = Field(default=1000.0, gt=0, le=100_000)
    batch: int | None = Field(default=None, ge=1, le=4096)
    gamma: float | None = Field(default=None, ge=0)
    aug: Literal["ada", "fixed", "noaug"] = "ada"
    target: float = Field(default=0.6, ge=0, le=1)
    p: float | None = Field(default=None, ge=0, le=1)
    mirror: bool = False
    freezed: int = Field(default=0, ge=0, le=64)
    snap: int = Field(default=10, ge=1, le=10_000)
    tick: float = Field(default=4.0, gt=0, le=10_000)
    metrics: list[str] = Field(default_factory=list, max_length=8)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    # Channel base/max of networks trained from scratch (demos, tests). When fine-tuning a base model
    # without a D (every stored model is G only), D is built at the base G's; these override that.
    cbase: int | None = Field(
        default=None,
        ge=16,
        le=2**20,
        description="Channel base (channels at r px: min(cbase / r, cmax)). Fine-tuning: D's only, which "
        "otherwise takes the base generator's.",
    )
    cmax: int | None = Field(
        default=None,
        ge=8,
        le=2048,
        description="Channel maximum. Fine-tuning: D's only, which otherwise takes the base generator's.",
    )
    preview_images: int = Field(default=32, ge=1, le=256)
    # Strict: a count of processes is a JSON integer, not "2" or 2.0.
    gpus: int = Field(
        default=1,
        ge=1,
        le=MAX_TRAINING_GPUS,
        strict=True,
        description="Ranks of data-parallel training (torch.distributed) the worker launches on its host: "
        "one per CUDA device (NCCL), or that many processes on a CPU host (gloo). `batch` must be a "
        "multiple of it; a host with fewer CUDA devices fails the job.",
    )

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not METRIC_NAME.match(name):
                raise ValueError(f"unknown metric {name!r}; expected e.g. {METRIC_EXAMPLES}")
        return names

    def check_choice(self) -> None:
        """The choices that involve two fields; the API calls this before writing the job row."""
        if self.base_model_id is None and self.cfg is None:
            raise ValueError("cfg: give base_model_id to fine-tune or cfg to train from scratch")
        if self.aug == "fixed" and self.p is None:
            raise ValueError("p: aug 'fixed' needs p, the augmentation probability")
        if self.batch is not None and self.batch % self.gpus:
            raise ValueError(
                f"batch: {self.batch} is not a multiple of gpus {self.gpus} (every rank takes an equal "
                "share of the batch)"
            )


# --- the table -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobKind:
    """One kind of job. If its params schema has a `queue` field, the request picks the queue.

    `public` kinds may be queued by anyone through the generic `POST /v1/jobs`. The others have their
    own routes, which check inputs the kind's params schema cannot (uploaded bytes, ownership of the
    model or dataset, storage keys) and set fields only the API may set; queued directly they would
    trust a client with those.
    """

    queue: QueueName
    params_model: type[BaseModel]
    public: bool = False

    def queue_for(self, params: Mapping[str, Any]) -> QueueName:
        if "queue" in self.params_model.model_fields and "queue" in params:
            return params["queue"]  # type: ignore[no-any-return]
        return self.queue


JOB_KINDS: Mapping[str, JobKind] = {
    "probe": JobKind(queue="inference", params_model=ProbeParams, public=True),
    "mix_grid": JobKind(queue="inference", params_model=MixGridParams),
    "video": JobKind(queue="inference", params_model=VideoParams),
    "model_import": JobKind(queue="inference", params_model=ModelImportParams),
    "projection": JobKind(queue="inference", params_model=ProjectionParams),
    "dataset_prepare": JobKind(queue="inference", params_model=DatasetPrepareParams),
    "training": JobKind(queue="training", params_model=TrainingParams),
    "ganspace": JobKind(queue="inference", params_model=GanSpaceParams),
    "edit_grid": JobKind(queue="inference", params_model=EditGridParams),
}


class InvalidJobParams(ValueError):
    """A job request the kind refuses; `field` names the offending field (dotted), for a 422."""

    def __init__(self, field: str, message: str, value: object = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.value = value


class UnknownJobKind(InvalidJobParams):
    def __init__(self, kind: str) -> None:
        known = ", ".join(sorted(JOB_KINDS))
        super().__init__("kind", f"unknown job kind {kind!r}; known kinds: {known}", kind)


class NotPublicJobKind(InvalidJobParams):
    """A kind the generic route refuses: unknown, or queued only through its own route (JobKind.public)."""

    def __init__(self, kind: str) -> None:
        accepted = ", ".join(public_job_kinds())
        why = "is queued through its own route" if kind in JOB_KINDS else "is unknown"
        super().__init__("kind", f"job kind {kind!r} {why}; accepted kinds: {accepted}", kind)


def public_job_kinds() -> list[str]:
    """The kinds the generic `POST /v1/jobs` accepts, sorted."""
    return sorted(name for name, entry in JOB_KINDS.items() if entry.public)


def check_public_kind(kind: str) -> None:
    """NotPublicJobKind unless `kind` may be queued through the generic route."""
    entry = JOB_KINDS.get(kind)
    if entry is None or not entry.public:
        raise NotPublicJobKind(kind)


def job_kind(kind: str) -> JobKind:
    """The table entry for `kind`; UnknownJobKind if there is none."""
    try:
        return JOB_KINDS[kind]
    except KeyError:
        raise UnknownJobKind(kind) from None


def validate_params(kind: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check `params` against the kind's schema and return them with defaults filled in (JSON-ready).

    Raises InvalidJobParams naming the first bad field (`params.seconds`), or UnknownJobKind.
    """
    entry = job_kind(kind)
    if params is not None and not isinstance(params, Mapping):
        raise InvalidJobParams("params", "must be an object", params)
    try:
        parsed = entry.params_model.model_validate(dict(params or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in ("params", *first["loc"]))
        raise InvalidJobParams(where, first["msg"], first.get("input")) from None
    return parsed.model_dump(mode="json")


def queue_for(kind: str, params: Mapping[str, Any]) -> QueueName:
    """The queue a job of this kind with these (validated) params runs on."""
    return job_kind(kind).queue_for(params)
