"""Schemathesis against the OpenAPI spec: generated requests for every operation, on a real stack
(PostgreSQL, Redis, a real inference worker process), must never get a 5xx other than a documented 503
and must answer as documented (status codes, content types, response schemas).

Path parameters named `model_id` are pointed at a real uploaded model (except for DELETE, which would
remove it for the rest of the run), so sampling, mixing and job-creating operations reach their
services and the worker instead of stopping at a 404. Hypothesis' example count is kept small per
operation so the whole run stays around a minute on two shared CPU cores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from tests.api.inference_service import FIXTURE_DIRS, Service, start_service
from tests.servers import PostgresServer, RedisServer

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 8


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, redis_server: RedisServer
) -> Iterator[Service]:
    # A training worker too: /readyz, one of the operations, is 200 only while every queue has one.
    yield from start_service(tmp_path_factory, postgres_server, redis_server, training_worker=True)


@pytest.fixture(scope="module")
def model_id(service: Service) -> str:
    unconditional = [d for d in FIXTURE_DIRS if "uncond" in d.name]
    assert unconditional, "no unconditional official fixture to upload"
    return service.upload(unconditional[0])


def _run_operation(operation: Any, mode: GenerationMode, model_id: str, statuses: Counter[str]) -> list[str]:
    """Up to MAX_EXAMPLES generated cases against one operation; the failures, one line each."""
    failures: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases on every run: a failure here reproduces
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        if "model_id" in (case.path_parameters or {}) and case.method.upper() != "DELETE":
            case.path_parameters["model_id"] = model_id
        response = case.call()
        statuses[f"{operation.label} {response.status_code}"] += 1
        checks = [not_a_server_error]
        if mode is GenerationMode.POSITIVE:
            checks += [status_code_conformance, content_type_conformance, response_schema_conformance]
        try:
            case.validate_response(response, checks=checks)
        except AssertionError as exc:  # schemathesis' FailureGroup is one
            first = str(exc).strip().splitlines()
            failures.append(
                f"{operation.label} [{mode.value}] -> {response.status_code}: "
                f"{first[0] if first else exc!r}\n    {case.as_curl_command()}"
            )

    try:
        run()
    except Unsatisfiable:
        # Negative cases need something to break: an operation with no parameters and no body has none.
        if mode is GenerationMode.POSITIVE:
            raise
    return failures


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_generated_requests_get_no_server_error(
    service: Service, model_id: str, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", service.http.app)
    failures: list[str] = []
    statuses: Counter[str] = Counter()
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"an operation schemathesis cannot read from the spec: {result!r}"
        operations.append(result.ok())
    assert len(operations) > 20, "the spec lost its operations"
    for operation in operations:
        failures += _run_operation(operation, mode, model_id, statuses)
    print("\n".join(f"{n:4d} {key}" for key, n in sorted(statuses.items())))
    assert not failures, "\n".join(failures)
    if mode is GenerationMode.POSITIVE:  # the run reached the worker, not only the validators
        assert statuses["GET /v1/models/{model_id}/images/{seed}.{format} 200"] > 0, statuses


# Found by the run above: each was a 5xx or a job that failed in the worker instead of a 422.


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/models", "/v1/datasets"])
def test_offset_past_a_64_bit_integer_is_a_422(service: Service, path: str) -> None:
    response = service.http.get(path, params={"offset": 2**63})
    assert response.status_code == 422, response.text
    assert "offset" in response.json()["detail"]
    assert service.http.get(path, params={"offset": 2**63 - 1}).json()["items"] == []


@pytest.mark.parametrize("styles", ["fine", "zz", "0-99"])
def test_mix_grid_with_bad_styles_is_refused_before_a_job_exists(
    service: Service, model_id: str, styles: str
) -> None:
    before = service.http.get("/v1/jobs", params={"kind": "mix_grid"}).json()["total"]
    response = service.http.post(
        f"/v1/models/{model_id}/mix-grids", json={"rows": [1], "cols": [2], "styles": styles}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("body styles:")
    assert service.http.get("/v1/jobs", params={"kind": "mix_grid"}).json()["total"] == before
