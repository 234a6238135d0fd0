"""The job kinds the service runs: one table of kind -> (queue, params schema, handler).

The API checks a request with `validate_params` before it writes the job row, and the worker looks the
handler up here. Later issues add the GAN kinds to JOB_KINDS; a handler that needs torch imports it
inside the function, so this table stays cheap to import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from worker.jobs import QueueName
from worker.tasks.context import JobContext
from worker.tasks.dataset_prepare import DatasetPrepareParams, run_dataset_prepare
from worker.tasks.mix_grid import MixGridParams, run_mix_grid
from worker.tasks.model_import import ModelImportParams, run_model_import
from worker.tasks.probe import ProbeParams, run_probe
from worker.tasks.projection import ProjectionParams, run_projection
from worker.tasks.training import TrainingParams, run_training
from worker.tasks.video import VideoParams, run_video

Handler = Callable[[JobContext, dict[str, Any]], dict[str, Any]]


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
    handler: Handler
    public: bool = False

    def queue_for(self, params: Mapping[str, Any]) -> QueueName:
        if "queue" in self.params_model.model_fields and "queue" in params:
            return params["queue"]  # type: ignore[no-any-return]
        return self.queue


JOB_KINDS: Mapping[str, JobKind] = {
    "probe": JobKind(queue="inference", params_model=ProbeParams, handler=run_probe, public=True),
    "mix_grid": JobKind(queue="inference", params_model=MixGridParams, handler=run_mix_grid),
    "video": JobKind(queue="inference", params_model=VideoParams, handler=run_video),
    "model_import": JobKind(queue="inference", params_model=ModelImportParams, handler=run_model_import),
    "projection": JobKind(queue="inference", params_model=ProjectionParams, handler=run_projection),
    "dataset_prepare": JobKind(
        queue="inference", params_model=DatasetPrepareParams, handler=run_dataset_prepare
    ),
    "training": JobKind(queue="training", params_model=TrainingParams, handler=run_training),
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
