"""Tenancy (issue 12, item 4): every operation of the OpenAPI document x (owner key, another key, no
key), and every id a request body or query carries, pointed at another key's resource.

The matrix is generated from the app's own OpenAPI document: each operation must have an entry in
CASES (and every entry must still name an operation), so a new route fails here until someone says how
its owner, another key and no key are to be answered. For an operation on a resource of key A:

- no key: 401 problem+json;
- key B: exactly the answer B gets for an id that does not exist (status, content type, problem type,
  title, field names, and the detail with the id swapped), so B cannot tell A's resource exists; and it
  is not acted upon (the owner's own request, sent last, still finds it: a DELETE or cancel by B that
  went through would make it a 404);
- key A: its normal answer.

Collections (lists, creating routes) answer B with B's own view, which must hold none of A's ids;
uploading the very bytes A uploaded gives B a model or dataset of its own, never A's id.

Then every id-taking field of a body or query (training's dataset_id and base_model_id, a video's
start_projection, sweep.direction and edit, an edit grid's direction, a mix's row/col `w:<id>`, edit=
on sampling, the params of a non-public job kind) pointed at A's resource on a model both keys see:
a 4xx naming the field, answered exactly as for an id that does not exist, and no job created for B.

The stack is real (PostgreSQL, Redis, one inference worker process), so the owner's sampling and job
routes get their real 200/202 and the probe job really runs; resources are made through the routes
where one exists (model and dataset uploads, directions, probe and training jobs) and with the worker's
own db helpers where only a worker makes them (a finished projection and its w artifact).
"""

from __future__ import annotations

import io
import re
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import sqlalchemy as sa
import torch
from fastapi.testclient import TestClient
from httpx import Response

from api.deps import owner_key_for
from gan.config import GeneratorConfig, MappingConfig, StyleGAN2SynthesisConfig
from gan.generator import Generator
from gan.io.checkpoint import save_generator
from tests.api.inference_service import Service, start_service
from tests.api.test_projections_local import register_tiny_model
from tests.servers import PostgresServer, RedisServer
from worker import jobs
from worker.artifacts import store_artifact
from worker.db.models import Job
from worker.settings import Settings
from worker.storage import make_storage
from worker.tasks.projection import W_ARTIFACT

pytestmark = pytest.mark.integration

KEY_A = "tenant-a-0123456789abcdef"
KEY_B = "tenant-b-0123456789abcdef"
OWNER_A = owner_key_for(KEY_A)
W_DIM = 16  # register_tiny_model's generator


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- the resources of key A (and the few B needs to make its own requests valid) -------------------------


def tiny_model_bytes(tmp: Path, seed: int = 0) -> bytes:
    """The 16 px generator of register_tiny_model, as the file a person would upload (another seed,
    other weights: uploads are deduplicated per key by their sha256)."""
    torch.manual_seed(seed)
    config = GeneratorConfig(
        architecture="stylegan2",
        z_dim=16,
        w_dim=W_DIM,
        c_dim=0,
        img_resolution=16,
        mapping=MappingConfig(num_layers=2),
        synthesis=StyleGAN2SynthesisConfig(channel_base=128, channel_max=16),
    )
    return save_generator(Generator(config).eval(), tmp / f"upload{seed}.safetensors").read_bytes()


def png(seed: int, size: int = 40) -> bytes:
    pixels = np.random.RandomState(seed).randint(0, 256, (size, size, 3), np.uint8)
    out = io.BytesIO()
    PIL.Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def dataset_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(3):
            zf.writestr(f"img{i}.png", png(i))
    return buf.getvalue()


@dataclass
class World:
    """Ids of key A's resources (and key B's own dataset), made once per module."""

    service: Service
    settings: Settings
    model_bytes: bytes
    zip_bytes: bytes
    model: str = ""  # A's, uploaded through POST /v1/models
    public_model: str = ""  # no owner (like the bundled demo): every key sees it
    dataset: str = ""
    job: str = ""  # A's probe job, run to its end by the worker
    training_job: str = ""
    projection: str = ""  # A's finished projection of A's model
    public_projection: str = ""  # A's finished projection of the public model
    artifact: str = ""  # the w file of `projection`
    direction: str = "mine"  # A's own direction on A's model
    public_direction: str = "amine"  # A's own direction on the public model
    b_dataset: str = ""
    counter: int = 0

    @property
    def http(self) -> TestClient:
        return self.service.http

    def a_ids(self) -> set[str]:
        return {
            self.model, self.dataset, self.job, self.training_job, self.projection,
            self.public_projection, self.artifact,
        }  # fmt: skip

    def fresh_model(self) -> str:
        self.counter += 1
        data = tiny_model_bytes(self.settings.data_dir, seed=1000 + self.counter)
        response = self.http.post(
            "/v1/models", files={"file": ("m.safetensors", data)}, headers=bearer(KEY_A)
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def fresh_dataset(self) -> str:
        self.counter += 1
        response = self.http.post(
            "/v1/datasets",
            files={"file": ("a.zip", dataset_zip())},
            data={"name": f"fresh {self.counter}"},
            headers=bearer(KEY_A),
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def fresh_direction(self) -> str:
        self.counter += 1
        name = f"fresh{self.counter}"
        self.add_direction(KEY_A, self.model, name)
        return name

    def fresh_queued_job(self) -> str:
        """A queued probe of A's that no worker will take (not enqueued), so the owner can cancel it."""
        with self.service.http.app.state.session_factory() as session:  # type: ignore[attr-defined]
            job, _ = jobs.submit_job(session, kind="probe", params={}, owner_key=OWNER_A)
            return job.id

    def add_direction(self, key: str, model_id: str, name: str) -> None:
        response = self.http.post(
            f"/v1/models/{model_id}/directions",
            json={"method": "user", "name": name, "vector": [0.25] * W_DIM},
            headers=bearer(key),
        )
        assert response.status_code == 201, response.text

    def finished_projection(self, model_id: str) -> tuple[str, str]:
        """A succeeded projection of A's with its w artifact, as the worker's task leaves it (only a
        worker makes one; the worker's own helpers write it). Returns (projection id, artifact id)."""
        factory = self.service.http.app.state.session_factory  # type: ignore[attr-defined]
        params = {
            "model_id": model_id, "image_key": f"uploads/projections/{'0' * 64}.png", "space": "w",
            "steps": 1, "seed": 0, "save_video": False, "class_idx": None,
        }  # fmt: skip
        with factory() as session:
            job, _ = jobs.submit_job(session, kind="projection", params=params, owner_key=OWNER_A)
            num_ws = int(
                session.execute(
                    sa.text("SELECT num_ws FROM models WHERE id = :i"), {"i": model_id}
                ).scalar_one()
            )
            w = io.BytesIO()
            np.savez(w, w=np.zeros((1, num_ws, W_DIM), np.float32))
            artifact = store_artifact(
                session, make_storage(self.settings), job_id=job.id, kind=W_ARTIFACT[1], name=W_ARTIFACT[0],
                content_type=W_ARTIFACT[2], data=w.getvalue(),
            )  # fmt: skip
            session.execute(
                sa.update(Job).where(Job.id == job.id).values(state="succeeded", progress=1.0, result={})
            )
            session.commit()
            return job.id, artifact


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, redis_server: RedisServer
) -> Iterator[Service]:
    yield from start_service(
        tmp_path_factory,
        postgres_server,
        redis_server,
        api_keys=(KEY_A, KEY_B),
        projection_distance="simple",
    )


@pytest.fixture(scope="module")
def world(service: Service, tmp_path_factory: pytest.TempPathFactory) -> World:
    settings = Settings(**service.settings)
    w = World(service, settings, tiny_model_bytes(tmp_path_factory.mktemp("model")), dataset_zip())
    http = service.http
    uploaded = http.post(
        "/v1/models",
        files={"file": ("tiny.safetensors", w.model_bytes)},
        data={"name": "a's"},
        headers=bearer(KEY_A),
    )
    assert uploaded.status_code == 201, uploaded.text
    w.model = uploaded.json()["id"]
    w.public_model = register_tiny_model(settings, None)
    made = http.post("/v1/datasets", files={"file": ("a.zip", w.zip_bytes)}, headers=bearer(KEY_A))
    assert made.status_code == 201, made.text
    w.dataset = made.json()["id"]
    made = http.post("/v1/datasets", files={"file": ("b.zip", w.zip_bytes)}, headers=bearer(KEY_B))
    assert made.status_code == 201, made.text
    w.b_dataset = made.json()["id"]
    assert w.b_dataset != w.dataset
    probe = http.post("/v1/jobs", json={"kind": "probe"}, headers=bearer(KEY_A))
    assert probe.status_code == 202, probe.text
    w.job = probe.json()["id"]
    training = http.post(
        "/v1/training-jobs",
        json={"dataset_id": w.dataset, "cfg": "stylegan2", "kimg": 0.1, "cbase": 64, "cmax": 16},
        headers=bearer(KEY_A),
    )
    assert training.status_code == 202, training.text
    w.training_job = training.json()["id"]
    w.add_direction(KEY_A, w.model, w.direction)
    w.add_direction(KEY_A, w.public_model, w.public_direction)
    w.projection, w.artifact = w.finished_projection(w.model)
    w.public_projection, _ = w.finished_projection(w.public_model)
    _wait_finished(http, w.job)
    return w


def _wait_finished(http: TestClient, job_id: str, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while http.get(f"/v1/jobs/{job_id}", headers=bearer(KEY_A)).json()["state"] not in (
        "succeeded",
        "failed",
    ):
        assert time.monotonic() < deadline, f"probe {job_id} never finished"
        time.sleep(0.1)


# --- the matrix ---------------------------------------------------------------------------------------------

Ids = Callable[[World], dict[str, str]]
Request = Callable[[World], dict[str, Any]]


@dataclass(frozen=True)
class Variant:
    """One way to call an operation. `ids` fills the path with key A's resources (created afresh for a
    destructive verb); `fixed` fills the other path parameters; `owner` is the owner's normal answer."""

    owner: frozenset[int]
    ids: Ids = lambda w: {}  # noqa: E731
    fixed: dict[str, str] = field(default_factory=dict)
    request: Request = lambda w: {}  # noqa: E731
    # What key B sends on a collection route, when A's request names A's resources (B's own instead;
    # B naming A's resources in a body is test_id_fields_of_another_key).
    request_b: Request | None = None
    scope: str = "scoped"  # scoped (ids of A in the path), collection (B's own view), public (no key)
    name: str = ""


def ok(*codes: int) -> frozenset[int]:
    return frozenset(codes)


def own_model(w: World) -> dict[str, str]:
    return {"model_id": w.model}


PNG = {"format": "png"}
SAMPLE = ok(200)
QUEUED = ok(202)


def _cached(w: World) -> dict[str, Any]:
    """A conditional GET: a 304 would say the resource exists, so it must come after the owner check."""
    return {"headers": {"If-None-Match": "*"}}


def _mix_grid(w: World) -> dict[str, Any]:
    return {"json": {"rows": [1], "cols": [2], "styles": "0-5"}}  # the tiny model has 6 ws


def _video(w: World) -> dict[str, Any]:
    return {"json": {"seeds": [1, 2], "frames": 2, "format": "gif", "fps": 10}}


def _edit_grid(w: World) -> dict[str, Any]:
    return {"json": {"direction": w.direction, "seeds": [1], "strengths": [0, 1]}}


def _projection(w: World) -> dict[str, Any]:
    return {"files": {"image": ("t.png", png(7, 16))}, "data": {"steps": "1"}}


def _training(w: World) -> dict[str, Any]:
    return {"json": {"dataset_id": w.dataset, "cfg": "stylegan2", "kimg": 0.1}}


def _training_b(w: World) -> dict[str, Any]:
    return {"json": {"dataset_id": w.b_dataset, "cfg": "stylegan2", "kimg": 0.1}}


CASES: dict[str, list[Variant]] = {
    "GET /healthz": [Variant(ok(200), scope="public")],
    "GET /readyz": [Variant(ok(200, 503), scope="public")],  # 503: no training worker in this stack
    "GET /metrics": [Variant(ok(200), scope="public")],
    "POST /v1/jobs": [Variant(QUEUED, request=lambda w: {"json": {"kind": "probe"}}, scope="collection")],
    "GET /v1/jobs": [Variant(ok(200), scope="collection")],
    "GET /v1/jobs/{job_id}": [Variant(ok(200), ids=lambda w: {"job_id": w.job})],
    "POST /v1/jobs/{job_id}/cancel": [Variant(ok(200), ids=lambda w: {"job_id": w.fresh_queued_job()})],
    "GET /v1/jobs/{job_id}/events": [Variant(ok(200), ids=lambda w: {"job_id": w.job})],
    "GET /v1/jobs/{job_id}/artifacts": [Variant(ok(200), ids=lambda w: {"job_id": w.projection})],
    "GET /v1/models/{model_id}/images/random.{format}": [Variant(SAMPLE, ids=own_model, fixed=PNG)],
    "GET /v1/models/{model_id}/images/{seed}.{format}": [
        Variant(SAMPLE, ids=own_model, fixed={**PNG, "seed": "3"}),
        Variant(ok(304), ids=own_model, fixed={**PNG, "seed": "3"}, request=_cached, name="If-None-Match"),
    ],
    "GET /v1/models/{model_id}/images/w/{projection_id}.{format}": [
        Variant(SAMPLE, ids=lambda w: {"model_id": w.model, "projection_id": w.projection}, fixed=PNG),
        Variant(
            SAMPLE,
            ids=lambda w: {"projection_id": w.public_projection},
            fixed=PNG,
            request=lambda w: {"model_id": w.public_model},
            name="public model, A's projection",
        ),
        Variant(
            ok(304),
            ids=lambda w: {"projection_id": w.public_projection},
            fixed=PNG,
            request=lambda w: {"model_id": w.public_model, **_cached(w)},
            name="public model, A's projection, If-None-Match",
        ),
    ],
    "GET /v1/models/{model_id}/mix.{format}": [
        Variant(SAMPLE, ids=own_model, fixed=PNG, request=lambda w: {"params": {"row": "1", "col": "2"}}),
        Variant(
            ok(304),
            ids=own_model,
            fixed=PNG,
            request=lambda w: {"params": {"row": "1", "col": "2"}, **_cached(w)},
            name="If-None-Match",
        ),
    ],
    "POST /v1/models/{model_id}/mix-grids": [Variant(QUEUED, ids=own_model, request=_mix_grid)],
    "POST /v1/models/{model_id}/videos": [Variant(QUEUED, ids=own_model, request=_video)],
    "GET /v1/models/{model_id}/directions": [Variant(ok(200), ids=own_model)],
    "POST /v1/models/{model_id}/directions": [
        Variant(
            ok(201),
            ids=own_model,
            request=lambda w: {
                "json": {"method": "user", "name": f"made{w.counter}", "vector": [0.5] * W_DIM}
            },
        )
    ],
    "DELETE /v1/models/{model_id}/directions/{direction_id}": [
        Variant(ok(204), ids=lambda w: {"model_id": w.model, "direction_id": w.fresh_direction()}),
        Variant(
            ok(204),
            ids=lambda w: {"direction_id": _fresh_public_direction(w)},
            request=lambda w: {"model_id": w.public_model},
            name="public model, A's direction",
        ),
    ],
    "POST /v1/models/{model_id}/edit-grids": [Variant(QUEUED, ids=own_model, request=_edit_grid)],
    "POST /v1/models/{model_id}/projections": [Variant(QUEUED, ids=own_model, request=_projection)],
    "GET /v1/projections/{projection_id}": [Variant(ok(200), ids=lambda w: {"projection_id": w.projection})],
    "POST /v1/datasets": [
        Variant(
            ok(201),
            request=lambda w: {"files": {"file": ("same.zip", w.zip_bytes)}},
            scope="collection",
            name="the bytes A uploaded",
        )
    ],
    "GET /v1/datasets": [Variant(ok(200), scope="collection")],
    "GET /v1/datasets/{dataset_id}": [Variant(ok(200), ids=lambda w: {"dataset_id": w.dataset})],
    "DELETE /v1/datasets/{dataset_id}": [Variant(ok(204), ids=lambda w: {"dataset_id": w.fresh_dataset()})],
    "GET /v1/datasets/{dataset_id}/thumbnails/{n}.png": [
        Variant(ok(200), ids=lambda w: {"dataset_id": w.dataset}, fixed={"n": "0"})
    ],
    "POST /v1/training-jobs": [Variant(QUEUED, request=_training, request_b=_training_b, scope="collection")],
    "GET /v1/training-jobs/{job_id}": [Variant(ok(200), ids=lambda w: {"job_id": w.training_job})],
    "POST /v1/models": [
        Variant(
            ok(200, 201),
            request=lambda w: {"files": {"file": ("same.safetensors", w.model_bytes)}},
            scope="collection",
            name="the bytes A uploaded",
        )
    ],
    "GET /v1/models": [Variant(ok(200), scope="collection")],
    "GET /v1/models/{model_id}": [Variant(ok(200), ids=own_model)],
    "DELETE /v1/models/{model_id}": [Variant(ok(204), ids=lambda w: {"model_id": w.fresh_model()})],
    "GET /v1/catalog": [Variant(ok(200), scope="collection")],
    "HEAD /v1/artifacts/{artifact_id}": [Variant(ok(200), ids=lambda w: {"artifact_id": w.artifact})],
    "GET /v1/artifacts/{artifact_id}": [Variant(ok(200), ids=lambda w: {"artifact_id": w.artifact})],
    "GET /v1/workers": [Variant(ok(200), scope="collection")],
}


def _fresh_public_direction(w: World) -> str:
    w.counter += 1
    name = f"pub{w.counter}"
    w.add_direction(KEY_A, w.public_model, name)
    return name


def operations(http: TestClient) -> set[str]:
    spec = http.app.openapi()  # type: ignore[attr-defined]
    return {f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method in ops}


def is_problem(response: Response, status: int) -> bool:
    return response.status_code == status and response.headers.get("content-type", "").startswith(
        "application/problem+json"
    )


def same_as_missing(foreign: Response, missing: Response, swaps: dict[str, str]) -> str | None:
    """Why B's answer for A's ids differs from its answer for ids that do not exist, or None."""
    if not (is_problem(foreign, 404) and is_problem(missing, 404)):
        return f"statuses {foreign.status_code} / {missing.status_code} (want 404 problem+json for both)"
    if not foreign.content and not missing.content:  # HEAD: the status and headers are all there is
        return None
    a, b = foreign.json(), missing.json()
    if sorted(a) != sorted(b):
        return f"fields {sorted(a)} / {sorted(b)}"
    detail = str(a.get("detail", ""))
    for own, absent in swaps.items():
        detail = detail.replace(own, absent)
    b = {**b, "detail": str(b.get("detail", ""))}
    a = {**a, "detail": detail}
    for key in ("instance",):  # the request path, which holds the id itself
        a.pop(key, None)
        b.pop(key, None)
    if a != b:
        return f"bodies differ: {a} / {b}"
    return None


def path_for(template: str, values: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return re.sub(r"\{(\w+)\}", fill, template)


def call(http: TestClient, method: str, path: str, key: str | None, kwargs: dict[str, Any]) -> Response:
    headers = {**kwargs.pop("headers", {}), **(bearer(key) if key else {})}
    return http.request(method, path, headers=headers, **kwargs)


def test_every_operation_has_a_case(service: Service) -> None:
    ops = operations(service.http)
    missing, stale = sorted(ops - set(CASES)), sorted(set(CASES) - ops)
    print(f"\n{len(ops)} operations in the OpenAPI document, {len(CASES)} with tenancy cases")
    assert not missing, f"operations with no tenancy case (add them to CASES): {missing}"
    assert not stale, f"cases for operations that no longer exist: {stale}"


def test_tenancy_matrix(world: World) -> None:
    http = world.http
    ops = operations(http)
    cases = leaks = 0
    failures: list[str] = []
    for op, variants in CASES.items():
        if op not in ops:
            continue  # reported by test_every_operation_has_a_case
        method, template = op.split(" ", 1)
        for variant in variants:
            label = f"{op}" + (f" [{variant.name}]" if variant.name else "")
            extra = variant.request(world)
            path_extra = {k: extra.pop(k) for k in list(extra) if k.endswith("_id")}  # unowned path ids
            owned = variant.ids(world)
            path = path_for(template, {**variant.fixed, **path_extra, **owned})
            kwargs = extra

            # No key.
            cases += 1
            anonymous = call(http, method, path, None, dict(kwargs))
            if variant.scope == "public":
                if anonymous.status_code not in variant.owner:
                    failures.append(f"{label} without a key: {anonymous.status_code} {anonymous.text[:200]}")
                continue
            if not is_problem(anonymous, 401):
                leaks += 1
                failures.append(f"{label} without a key: {anonymous.status_code} {anonymous.text[:200]}")

            # Another key.
            cases += 1
            b_kwargs = variant.request_b(world) if variant.request_b else kwargs
            foreign = call(http, method, path, KEY_B, dict(b_kwargs))
            if variant.scope == "scoped":
                absent = {k: str(uuid.uuid4()) if k != "direction_id" else "nosuchdirection" for k in owned}
                missing = call(
                    http,
                    method,
                    path_for(template, {**variant.fixed, **path_extra, **absent}),
                    KEY_B,
                    dict(kwargs),
                )
                why = same_as_missing(foreign, missing, {owned[k]: absent[k] for k in owned})
                if why:
                    leaks += 1
                    failures.append(f"{label} with another key: {why}")
            else:
                shown = sorted(i for i in world.a_ids() if i and i in foreign.text)
                if foreign.status_code not in variant.owner or shown:
                    leaks += 1
                    failures.append(f"{label} with another key: {foreign.status_code}, A's ids shown {shown}")

            # The owner, last: a destructive request by B that had gone through would make this a 404.
            cases += 1
            mine = call(http, method, path, KEY_A, dict(kwargs))
            if mine.status_code not in variant.owner:
                failures.append(f"{label} with the owner's key: {mine.status_code} {mine.text[:300]}")
    print(
        f"\ntenancy matrix: {cases} (operation, verb, caller) cases over {len(ops)} operations; {leaks} leaks"
    )
    assert not failures, "\n".join(failures)
    assert leaks == 0


# --- ids in bodies and queries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IdField:
    """Key B's request naming one of A's resources in `field`, built by `request(world, the id)`; `own`
    picks A's id, `absent` an id nothing has."""

    field: str
    method: str
    path: Callable[[World], str]
    request: Callable[[World, str], dict[str, Any]]
    own: Callable[[World], str]
    absent: str = ""


def _public(suffix: str) -> Callable[[World], str]:
    return lambda w: f"/v1/models/{w.public_model}{suffix}"


VIDEO = {"seeds": [1], "frames": 2, "fps": 10, "format": "gif"}
ID_FIELDS: list[IdField] = [
    IdField(
        "dataset_id", "POST", lambda w: "/v1/training-jobs",
        lambda w, i: {"json": {"dataset_id": i, "cfg": "stylegan2", "kimg": 0.1}},
        lambda w: w.dataset,
    ),
    IdField(
        "base_model_id", "POST", lambda w: "/v1/training-jobs",
        lambda w, i: {"json": {"dataset_id": w.b_dataset, "base_model_id": i, "kimg": 0.1}},
        lambda w: w.model,
    ),
    IdField(
        "start_projection", "POST", _public("/videos"),
        lambda w, i: {"json": {**VIDEO, "start_projection": i}},
        lambda w: w.public_projection,
    ),
    IdField(
        "edit", "POST", _public("/videos"), lambda w, i: {"json": {**VIDEO, "edit": [f"{i}:1"]}},
        lambda w: w.public_direction, "nosuchdirection",
    ),
    IdField(
        "sweep", "POST", _public("/videos"),
        lambda w, i: {"json": {**VIDEO, "sweep": {"direction": i}}},
        lambda w: w.public_direction, "nosuchdirection",
    ),
    IdField(
        "direction", "POST", _public("/edit-grids"),
        lambda w, i: {"json": {"direction": i, "seeds": [1], "strengths": [0, 1]}},
        lambda w: w.public_direction, "nosuchdirection",
    ),
    IdField(
        "edit", "POST", _public("/edit-grids"),
        lambda w, i: {"json": {"direction": "bmine", "seeds": [1], "strengths": [0, 1], "edit": [f"{i}:1"]}},
        lambda w: w.public_direction, "nosuchdirection",
    ),
    IdField(
        "edit", "GET", _public("/images/3.png"), lambda w, i: {"params": {"edit": f"{i}:1"}},
        lambda w: w.public_direction, "nosuchdirection",
    ),
    IdField(
        "edit", "GET", _public("/images/random.png"), lambda w, i: {"params": {"edit": f"{i}:1"}},
        lambda w: w.public_direction, "nosuchdirection",
    ),
    IdField(
        "row", "GET", _public("/mix.png"), lambda w, i: {"params": {"row": f"w:{i}", "col": "1"}},
        lambda w: w.public_projection,
    ),
    IdField(
        "col", "GET", _public("/mix.png"), lambda w, i: {"params": {"row": "1", "col": f"w:{i}"}},
        lambda w: w.public_projection,
    ),
    # The generic route queues public kinds only: the kinds that take ids have routes that check them.
    IdField(
        "kind", "POST", lambda w: "/v1/jobs",
        lambda w, i: {"json": {"kind": "training", "params": {"dataset_id": i, "cfg": "stylegan2"}}},
        lambda w: w.dataset,
    ),
    IdField(
        "kind", "POST", lambda w: "/v1/jobs",
        lambda w, i: {"json": {"kind": "video", "params": {"model_id": i, "seeds": [1]}}},
        lambda w: w.model,
    ),
]  # fmt: skip


def b_job_count(http: TestClient) -> int:
    total: int = http.get("/v1/jobs", headers=bearer(KEY_B)).json()["total"]
    return total


def test_id_fields_of_another_key(world: World) -> None:
    http = world.http
    world.add_direction(KEY_B, world.public_model, "bmine")  # B's own, for requests that need a valid one
    a_names = {world.public_direction, world.direction} | world.a_ids()
    failures: list[str] = []
    before = b_job_count(http)
    for case in ID_FIELDS:
        label = f"{case.method} {case.path(world).replace(world.public_model, '{public model}')} {case.field}"
        own = case.own(world)
        absent = case.absent or str(uuid.uuid4())
        foreign = call(http, case.method, case.path(world), KEY_B, case.request(world, own))
        missing = call(http, case.method, case.path(world), KEY_B, case.request(world, absent))
        if not (400 <= foreign.status_code < 500) or not foreign.headers["content-type"].startswith(
            "application/problem+json"
        ):
            failures.append(f"{label}: {foreign.status_code} {foreign.text[:300]}")
            continue
        detail = str(foreign.json().get("detail", ""))
        if case.field not in detail:
            failures.append(f"{label}: the detail does not name the field: {detail!r}")
        if foreign.status_code != missing.status_code or detail.replace(own, absent) != missing.json().get(
            "detail"
        ):
            failures.append(f"{label}: A's id answered unlike a missing one: {foreign.text} / {missing.text}")
        shown = sorted(n for n in a_names if n in missing.text)
        if shown:
            failures.append(f"{label}: the answer names A's resources {shown}: {missing.text}")
        print(f"  {label}: {foreign.status_code} {detail[:110]}")
    after = b_job_count(http)
    print(
        f"\n{len(ID_FIELDS)} id-taking fields pointed at another key's resource; jobs made for B: {after - before}"
    )
    assert not failures, "\n".join(failures)
    assert after == before, "a request naming another key's resource was queued"
