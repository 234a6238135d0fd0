"""Synchronous sampling and mixing, and the mix-grid and video jobs, behind /v1/models/{id}/...

A synchronous request is checked here against the model's row (class, cutoff, StyleGAN3-only options,
resolution limit), so a bad parameter is a 422 naming it without any worker involved; then it passes
the per-key rate limit and the per-process in-flight cap, goes to the inference queue as one
`stylegan.render` task carrying a `worker.inference.messages` request, and waits for its image
(worker/inference/). Broker down, no worker answering in time, or a worker failure are 503 with
Retry-After, never a hang or a 500.

Caching: a seed (or projection) request always renders the same pixels (noise "random" is seeded from
the image's seed, see gan.sampling.Sampler), so its ETag is a hash of what decides the pixels: the
model file's sha256, the canonical parameters, the seed and the format, plus RENDER_VERSION, bumped
whenever the rendering code changes its output. A matching If-None-Match is answered 304 before any
work is queued.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import numpy as np
from fastapi import FastAPI
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from api.errors import Conflict, InvalidRequest, NotFound, ServiceUnavailable, naming
from api.metrics import observe_batch_size, observe_phases
from api.ratelimit import SampleInFlightLimit, SampleRateLimit, sample_limits
from api.schemas.jobs import JobCreate
from api.schemas.sampling import (
    PSI_MAX,
    PSI_MIN,
    ImageQuery,
    MixGridCreate,
    MixQuery,
    ProjectionImageQuery,
    VideoCreate,
)
from api.services import jobs as job_service
from api.services.projections import load_projection_w
from gan.config import GeneratorConfig
from gan.mixing import parse_styles, style_bands
from gan.vocabulary import MAX_SEED, ImageFormat, NoiseMode
from worker.db.models import Model
from worker.db.queries import load_visible
from worker.inference.client import InferenceClient, InferenceFailed, InferenceTimeout
from worker.inference.messages import (
    EditOffset,
    FoundDirections,
    ImageOptions,
    MixRequest,
    ModelRef,
    Refusal,
    RenderTimings,
    SampleRequest,
    SeedLatent,
    SefaRequest,
    WLatent,
    WRequest,
    encode_w,
)
from worker.inference.messages import RenderedImage as ImageReply
from worker.inference.tasks import NoResultBackend
from worker.presence import QueueWatch
from worker.settings import Settings
from worker.storage import make_storage

if TYPE_CHECKING:
    from celery import Celery

    from worker.db.models import Job

logger = logging.getLogger(__name__)

RENDER_VERSION = "1"
# Retry-After when no inference worker answered or the broker is down: long enough for a restarted
# worker to come up, short enough for a user to wait.
UNAVAILABLE_RETRY_AFTER_S = 5
# A refusal names the message's field; the user gave it under this query parameter name.
_QUERY_NAMES = {"class_idx": "class", "w": "projection_id", "edits": "edit"}


@dataclass(frozen=True)
class ResolvedEdit:
    """An `edit=` of the query, looked up (api/services/directions.py) and made concrete for the model."""

    spec: str  # `id:strength` or `id:strength@range`, in one spelling (gan.editing.Edit.spec)
    digest: str  # of the direction's numbers: a user's direction stored again under its name is new pixels
    offset: EditOffset


@dataclass(frozen=True)
class ImageParams:
    """The query of an image or a mix, as parsed by the route (None: not given)."""

    psi: float = 0.7
    cutoff: int | None = None
    noise: NoiseMode = "const"
    class_idx: int | None = None
    translate: tuple[float, float] | None = None
    rotate: float | None = None
    edits: tuple[ResolvedEdit, ...] = ()

    def canonical(self) -> dict[str, Any]:
        """The parameters that decide the pixels, in one spelling (for ETags and permanent URLs)."""
        values: dict[str, Any] = {"psi": repr(float(self.psi)), "noise": self.noise}
        if self.cutoff is not None:
            values["cutoff"] = str(self.cutoff)
        if self.class_idx is not None:
            values["class"] = str(self.class_idx)
        if self.translate is not None:
            values["translate"] = f"{self.translate[0]!r},{self.translate[1]!r}"
        if self.rotate is not None:
            values["rotate"] = repr(float(self.rotate))
        if self.edits:
            values["edit"] = [edit.spec for edit in self.edits]
        return values

    def query_string(self) -> str:
        return urlencode(self.canonical(), doseq=True)

    def options(self) -> ImageOptions:
        """These parameters as the inference worker's message takes them."""
        return ImageOptions(
            psi=self.psi,
            cutoff=self.cutoff,
            noise=self.noise,
            class_idx=self.class_idx,
            translate=self.translate,
            rotate=self.rotate,
            edits=tuple(edit.offset for edit in self.edits),
        )


def image_params(query: ImageQuery | ProjectionImageQuery | MixQuery) -> ImageParams:
    """A route's query as ImageParams; what a route does not take keeps its default."""
    if isinstance(query, ProjectionImageQuery):
        # A projected w is rendered as it is: psi 1 is what the worker does with it, whatever psi says.
        return ImageParams(
            psi=1.0, noise=query.noise, translate=parse_translate(query.translate), rotate=query.rotate
        )
    if isinstance(query, ImageQuery):
        return ImageParams(
            psi=query.psi,
            cutoff=query.cutoff,
            noise=query.noise,
            class_idx=query.class_idx,
            translate=parse_translate(query.translate),
            rotate=query.rotate,
        )
    return ImageParams(psi=query.psi, cutoff=query.cutoff, noise=query.noise, class_idx=query.class_idx)


@dataclass(frozen=True)
class RenderedImage:
    data: bytes
    content_type: str
    batch_size: int
    # Seconds by phase (render_phases), for the Server-Timing header and /metrics; empty when the worker
    # sent no timings.
    phases: dict[str, float] = field(default_factory=dict)


def render_phases(timings: RenderTimings | None, inference_s: float) -> dict[str, float]:
    """Where an image's time went, by the names of the `Server-Timing` header: the worker's own phases,
    `inference` (the API's whole wait for the worker, from its limit checks to the reply parsed) and
    `broker`, what of that wait the worker did not account for (publish, pick-up, result store and poll,
    JSON and base64 both ways)."""
    if timings is None:
        return {}
    return {
        "batch-wait": timings.batch_wait_s,
        "synthesis": timings.synthesis_s,
        "encode": timings.encode_s,
        "worker": timings.worker_s,
        "broker": max(0.0, inference_s - timings.worker_s),
        "inference": inference_s,
    }


# --- per-app state ------------------------------------------------------------------------------------

_state_lock = threading.Lock()


def _app_state(app: FastAPI, name: str, make: Any) -> Any:
    state = app.state
    value = getattr(state, name, None)
    if value is None:
        with _state_lock:
            value = getattr(state, name, None)
            if value is None:
                value = make()
                setattr(state, name, value)
    return value


def inference_client(app: FastAPI) -> InferenceClient:
    return _app_state(app, "inference_client", lambda: InferenceClient(app.state.celery, app.state.settings))  # type: ignore[no-any-return]


def queue_watch(app: FastAPI) -> QueueWatch:
    return _app_state(app, "queue_watch", lambda: QueueWatch(app.state.session_factory, app.state.settings))  # type: ignore[no-any-return]


def _sample_limits(app: FastAPI) -> tuple[SampleRateLimit, SampleInFlightLimit]:
    return _app_state(app, "sample_limits", lambda: sample_limits(app.state.settings))  # type: ignore[no-any-return]


def rate_limiter(app: FastAPI) -> SampleRateLimit:
    return _sample_limits(app)[0]


def in_flight(app: FastAPI) -> SampleInFlightLimit:
    return _sample_limits(app)[1]


# --- checks ------------------------------------------------------------------------------------------


def find_model(session: Session, model_id: str, owner_key: str | None) -> Model:
    """The model, if this key may see it (worker/db/queries.py: its own, and the public ones such as the
    bundled demo, which every key lists and so may sample); another key's model is as absent as a
    missing one (404)."""
    model = load_visible(session, Model, model_id, owner_key)
    if model is None:
        raise NotFound(f"no model with id {model_id!r}")
    return model


def parse_translate(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise InvalidRequest(f"query translate: expected two numbers like 0.3,-1 (got {text!r})") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise InvalidRequest(f"query translate: values must be finite (got {text!r})")
    return x, y


def check_model_params(
    model: Model, params: ImageParams, settings: Settings, *, where: str = "query"
) -> None:
    """Refuse what this model cannot do, naming the parameter (422)."""
    if model.resolution > settings.max_resolution:
        raise InvalidRequest(
            f"model {model.id}: its resolution {model.resolution} px is over this service's limit of "
            f"{settings.max_resolution} px (STYLEGAN_MAX_RESOLUTION)"
        )
    if not (math.isfinite(params.psi) and PSI_MIN <= params.psi <= PSI_MAX):
        raise InvalidRequest(f"{where} psi: must be in [{PSI_MIN}, {PSI_MAX}] (got {params.psi})")
    if params.cutoff is not None and not 1 <= params.cutoff <= model.num_ws:
        raise InvalidRequest(
            f"{where} cutoff: must be in [1, {model.num_ws}] for this model (got {params.cutoff})"
        )
    if model.c_dim > 0 and params.class_idx is None:
        raise InvalidRequest(
            f"{where} class: required, the model is conditional on {model.c_dim} classes (0-{model.c_dim - 1})"
        )
    if model.c_dim == 0 and params.class_idx is not None:
        raise InvalidRequest(
            f"{where} class: the model is unconditional and takes no class (got {params.class_idx})"
        )
    if params.class_idx is not None and not 0 <= params.class_idx < model.c_dim:
        raise InvalidRequest(
            f"{where} class: must be in [0, {model.c_dim - 1}] for this model (got {params.class_idx})"
        )
    is_sg3 = model.architecture.startswith("stylegan3")
    if params.translate is not None and not is_sg3:
        raise InvalidRequest(
            f"{where} translate: only StyleGAN3 models can be translated (this is {model.architecture})"
        )
    if params.rotate is not None:
        if not is_sg3:
            raise InvalidRequest(
                f"{where} rotate: only StyleGAN3 models can be rotated (this is {model.architecture})"
            )
        if not math.isfinite(params.rotate):
            raise InvalidRequest(f"{where} rotate: must be a finite number of degrees")


def etag(model: Model, subject: str, params: ImageParams, fmt: ImageFormat) -> str:
    """A strong ETag (RFC 9110 section 8.8.3) naming the exact pixels and encoding."""
    canonical = json.dumps(
        {
            "v": RENDER_VERSION,
            "model": model.sha256,
            "subject": subject,
            "params": params.canonical(),
            "edits": [edit.digest for edit in params.edits],
            "format": fmt,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def if_none_match(header: str | None, tag: str) -> bool:
    """True when the client's If-None-Match already names `tag` (weak comparison, RFC 9110 13.1.2)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    candidates = [part.strip().removeprefix("W/") for part in header.split(",")]
    return tag in candidates


def cache_control(settings: Settings) -> str:
    # With auth on, the same URL answers 404 to another key: shared caches must not keep it.
    scope = "private" if settings.auth_enabled else "public"
    return f"{scope}, max-age=31536000, immutable"


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


# --- projections ---------------------------------------------------------------------------------------


def projection_w(
    session: Session, settings: Settings, projection_id: str, owner_key: str | None, field: str | None = None
) -> np.ndarray:
    """The projected w [num_ws, w_dim] of a finished projection job of this key (404 otherwise; 409 while
    unfinished). `field` is where a body or query named it (`query row`, `body start_projection`): the
    refusal then starts with it, as every refusal of a field does; a path's own id needs no naming."""
    try:
        w = load_projection_w(session, make_storage(settings), projection_id, owner_key)
    except (NotFound, Conflict) as exc:
        if field is None:
            raise
        raise type(exc)(f"{field}: {exc.detail}") from None
    return w.reshape(w.shape[-2], w.shape[-1])


def _check_w(model: Model, w: np.ndarray, field: str) -> None:
    if tuple(w.shape) != (model.num_ws, model.w_dim):
        raise InvalidRequest(
            f"query {field}: the projection's w is {list(w.shape)}, this model needs [{model.num_ws}, {model.w_dim}] "
            "(was it projected with another model?)"
        )


# --- rendering -----------------------------------------------------------------------------------------


def _model_ref(model: Model) -> ModelRef:
    return ModelRef(file_key=model.file_key)


def sample_request(model: Model, seed: int, params: ImageParams, fmt: ImageFormat) -> SampleRequest:
    return SampleRequest(model=_model_ref(model), image=params.options(), format=fmt, seed=seed)


def w_request(model: Model, w: np.ndarray, params: ImageParams, fmt: ImageFormat) -> WRequest:
    _check_w(model, w, "projection_id")
    return WRequest(model=_model_ref(model), image=params.options(), format=fmt, w=encode_w(w))


def latent_source(
    session: Session, settings: Settings, model: Model, text: str, field: str, owner_key: str | None
) -> tuple[SeedLatent | WLatent, str]:
    """`SEED` or `w:PROJECTION_ID` -> the request's latent, and its canonical name (for the ETag)."""
    if text.startswith("w:"):
        projection_id = text[2:]
        if not projection_id:
            raise InvalidRequest(f"query {field}: expected a seed or w:<projection id> (got {text!r})")
        w = projection_w(session, settings, projection_id, owner_key, field=f"query {field}")
        _check_w(model, w, field)
        return WLatent.from_array(w), f"w:{projection_id}"
    if not text.isdigit() or int(text) > MAX_SEED:
        raise InvalidRequest(
            f"query {field}: expected a seed in [0, {MAX_SEED}] or w:<projection id> (got {text!r})"
        )
    return SeedLatent(seed=int(text)), str(int(text))


def mix_request(
    model: Model,
    row: SeedLatent | WLatent,
    col: SeedLatent | WLatent,
    styles: str,
    params: ImageParams,
    fmt: ImageFormat,
) -> MixRequest:
    return MixRequest(
        model=_model_ref(model), image=params.options(), format=fmt, row=row, col=col, styles=styles
    )


def render(
    app: FastAPI, owner_key: str | None, request: SampleRequest | WRequest | MixRequest, *, session: Session
) -> RenderedImage:
    """Rate-limit, send to the inference worker, wait; 429/503/422 as the module docstring says."""
    started = time.monotonic()
    reply = ask_inference(app, owner_key, request, session=session)
    inference_s = time.monotonic() - started
    assert not isinstance(reply, FoundDirections), "an image request answered with directions"
    phases = render_phases(reply.timings, inference_s)
    observe_batch_size(app, reply.batch_size)
    observe_phases(app, phases)
    return RenderedImage(reply.data, reply.content_type, reply.batch_size, phases)


def ask_inference(
    app: FastAPI,
    owner_key: str | None,
    request: SampleRequest | WRequest | MixRequest | SefaRequest,
    *,
    session: Session,
) -> ImageReply | FoundDirections:
    """One synchronous inference request (an image, or a model's SeFa directions); a refusal is a 422
    naming the query parameter.

    `session` is the request's: its transaction ends here, before the wait, so that its pooled
    connection goes back to the pool (the rows it loaded stay usable; a later query takes another).
    The wait lasts up to sample_timeout_seconds, and a connection held that long by each waiting
    request drained the pool every other request needs: under 1000 concurrent users the API answered
    500 (pool timeout) to all but a few dozen requests (tests/hardening/test_load.py).
    """
    session.commit()
    settings: Settings = app.state.settings
    rate_limiter(app).check(owner_key)
    unavailable = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)}
    # Said at once rather than after the sampling timeout, and as what it is: nothing would answer.
    if not queue_watch(app).has_worker("inference"):
        raise ServiceUnavailable(
            "no inference worker is running, so nothing can render this image: start one with "
            "`stylegan worker --queues inference` (`stylegan serve` runs one unless --no-worker); "
            "GET /v1/workers lists the live ones",
            headers=unavailable,
        )
    with in_flight(app).hold():
        try:
            reply = inference_client(app).call(request, settings.sample_timeout_seconds)
        except InferenceTimeout as exc:
            raise ServiceUnavailable(f"{exc}; retry later", headers=unavailable) from None
        except (OperationalError, RedisError, OSError) as exc:
            logger.warning("sampling: broker unreachable: %s", exc)
            raise ServiceUnavailable("the broker is unreachable; retry later", headers=unavailable) from None
        except NoResultBackend as exc:
            raise ServiceUnavailable(str(exc), headers=unavailable) from None
        except InferenceFailed as exc:
            logger.error("sampling: the inference worker failed: %s", exc)
            raise ServiceUnavailable(
                "the inference worker failed on this request; retry later", headers=unavailable
            ) from None
    if isinstance(reply, Refusal):
        raise InvalidRequest(f"query {_QUERY_NAMES.get(reply.field, reply.field)}: {reply.detail}")
    return reply


# --- jobs ----------------------------------------------------------------------------------------------


def submit_mix_grid(
    session: Session,
    celery: Celery,
    settings: Settings,
    *,
    model: Model,
    body: MixGridCreate,
    owner_key: str | None,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    params = ImageParams(psi=body.psi, cutoff=body.cutoff, noise=body.noise, class_idx=body.class_idx)
    check_model_params(model, params, settings, where="body")
    cells = len(body.rows) * len(body.cols)
    if cells > settings.mix_grid_max_cells:
        raise InvalidRequest(
            f"body rows, cols: {len(body.rows)} x {len(body.cols)} = {cells} cells is over the limit of "
            f"{settings.mix_grid_max_cells} (STYLEGAN_MIX_GRID_MAX_CELLS)"
        )
    _check_styles(model, body.styles, where="body")
    job_params = body.model_dump(by_alias=False, exclude={"webhook_url"}) | {"model_id": model.id}
    return _submit(
        session, celery, settings, "mix_grid", job_params, owner_key, idempotency_key, body.webhook_url
    )


def _check_styles(model: Model, styles: str, *, where: str) -> None:
    """Refuse bad `styles` with a 422 before a job row exists, rather than as a failed job later.

    gan.mixing holds the one parser (bands depend on the architecture).
    """
    bands = style_bands(GeneratorConfig.from_dict(model.config)) if model.config else None
    with naming(f"{where} styles"):
        parse_styles(styles, model.num_ws, bands)


def submit_video(
    session: Session,
    celery: Celery,
    settings: Settings,
    *,
    model: Model,
    body: VideoCreate,
    owner_key: str | None,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    params = ImageParams(psi=body.psi, cutoff=body.cutoff, noise=body.noise, class_idx=body.class_idx)
    check_model_params(model, params, settings, where="body")
    if body.frames > settings.video_max_frames:
        raise InvalidRequest(
            f"body frames: {body.frames} is over the limit of {settings.video_max_frames} (STYLEGAN_VIDEO_MAX_FRAMES)"
        )
    is_sg3 = model.architecture.startswith("stylegan3")
    for name, value in (("translate", body.translate), ("rotate", body.rotate)):
        if value is not None and not is_sg3:
            raise InvalidRequest(
                f"body {name}: only StyleGAN3 models take a {name} path (this is {model.architecture})"
            )
    keys = len(body.seeds) + (body.start_projection is not None)
    if keys < 2 and body.translate is None and body.rotate is None and body.sweep is None:
        raise InvalidRequest(
            "body seeds: a walk needs two keys or more (seeds, or a start_projection and a seed), "
            "or one seed and a translate/rotate path or a sweep"
        )
    if body.format == "gif" and body.fps > 50:
        raise InvalidRequest(f"body fps: GIF cannot play above 50 fps (got {body.fps:g}); use webp or mp4")
    job_params = body.model_dump(mode="json", by_alias=False, exclude={"webhook_url"}) | {
        "model_id": model.id
    }
    return _submit(
        session, celery, settings, "video", job_params, owner_key, idempotency_key, body.webhook_url
    )


def _submit(
    session: Session,
    celery: Celery,
    settings: Settings,
    kind: str,
    params: dict[str, Any],
    owner_key: str | None,
    idempotency_key: str | None,
    webhook_url: str | None,
) -> tuple[Job, bool]:
    return job_service.submit_job(
        session,
        celery,
        settings,
        request=JobCreate(kind=kind, params=params, webhook_url=webhook_url),
        owner_key=owner_key,
        idempotency_key=idempotency_key,
    )
