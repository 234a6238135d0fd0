"""Stateful schemathesis with API keys (issue 12, item 4): sequences of calls that feed one answer's ids
into the next request (schemathesis infers the links between operations from the OpenAPI document),
sent alternately with two keys, on a real stack (PostgreSQL, Redis, an inference and a training worker),
must never get a 5xx other than a documented 503.

Two keys in one sequence: a resource made with one key is then read, changed or deleted with the other
(expected: 404 as if absent; any 5xx there would be a tenancy bug that the matrix in
test_tenancy_matrix.py, which covers every operation once, might not reach). Generated `model_id` and
`dataset_id` path parameters are pointed at a real model and dataset (every third call at the other
key's), so sampling, job-creating and dataset operations reach their services instead of stopping at a
404 (DELETE keeps its generated id, which would remove them for the rest of the run). The example
count is small, so the run stays within about a minute on two shared cores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis.checks import not_a_server_error

from api.deps import owner_key_for
from tests.api.inference_service import Service, start_service
from tests.api.test_projections_local import register_tiny_model
from tests.hardening.test_tenancy_matrix import dataset_zip
from tests.servers import PostgresServer, RedisServer
from worker.settings import Settings

pytestmark = pytest.mark.integration

KEYS = ("stateful-a-0123456789abcdef", "stateful-b-0123456789abcdef")
MAX_EXAMPLES = 30
STEPS = 10
MIN_CALLS = 200
MAX_ROUNDS = 6


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, redis_server: RedisServer
) -> Iterator[Service]:
    yield from start_service(
        tmp_path_factory, postgres_server, redis_server, training_worker=True, api_keys=KEYS
    )


@pytest.fixture(scope="module")
def owned(service: Service) -> dict[str, dict[str, str]]:
    """Per key: a model (c_dim differs, so the two rows have different files) and a dataset of its own."""
    settings = Settings(**service.settings)
    out: dict[str, dict[str, str]] = {}
    for c_dim, key in enumerate(KEYS):
        made = service.http.post(
            "/v1/datasets",
            files={"file": ("d.zip", dataset_zip())},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert made.status_code == 201, made.text
        out[key] = {
            "model_id": register_tiny_model(settings, owner_key_for(key), c_dim=c_dim),
            "dataset_id": made.json()["id"],
        }
    return out


def test_stateful_run_with_two_keys_has_no_server_error(
    service: Service, owned: dict[str, dict[str, str]]
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", service.http.app)
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    calls = [0]

    class Keyed(schema.as_state_machine()):  # type: ignore[misc]
        key = KEYS[0]

        def before_call(self, case: Any) -> None:
            # Keys alternate call by call; every third call names the other key's model or dataset.
            calls[0] += 1
            self.key = KEYS[calls[0] % 2]
            whose = KEYS[(calls[0] + (calls[0] % 3 == 0)) % 2]
            for name in ("model_id", "dataset_id"):
                if name in (case.path_parameters or {}) and case.method.upper() != "DELETE":
                    case.path_parameters[name] = owned[whose][name]

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": {"Authorization": f"Bearer {self.key}"}}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            statuses[f"{case.method} {case.path} {response.status_code}"] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error], transport_kwargs=kwargs)
            except AssertionError as exc:  # schemathesis' FailureGroup is one
                first = str(exc).strip().splitlines()
                failures.append(
                    f"{case.method} {case.path} -> {response.status_code}: {first[0] if first else exc!r}"
                )

    # The server keeps its state between sequences (rows, finished jobs), so which links a replayed prefix
    # can follow may differ from the first time; Hypothesis then stops with FlakyStrategyDefinition. That
    # ends a round's generation, not the check: every call made until then was checked. Rounds (random
    # seeds) go on until MIN_CALLS calls were made. Failures are collected, not raised, so nothing is
    # shrunk or replayed; each names its request.
    rounds = stopped = 0
    while sum(statuses.values()) < MIN_CALLS and rounds < MAX_ROUNDS:
        rounds += 1
        try:
            Keyed.run(
                settings=settings(
                    max_examples=MAX_EXAMPLES,
                    stateful_step_count=STEPS,
                    deadline=None,
                    database=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
            )
        except FlakyStrategyDefinition:
            stopped += 1
    total = sum(statuses.values())
    print("\n".join(f"{n:4d} {key}" for key, n in sorted(statuses.items())))
    print(
        f"\nstateful run with 2 keys: {total} calls over {len({k.rsplit(' ', 1)[0] for k in statuses})} "
        f"operations, {sum(n for k, n in statuses.items() if int(k.rsplit(' ', 1)[1]) >= 500 and not k.endswith(' 503'))} 5xx "
        f"(other than 503), {len(failures)} failures; {rounds} rounds, {stopped} stopped early by a replay that "
        "met another server state"
    )
    assert not failures, "\n".join(failures)
    assert total >= MIN_CALLS, statuses
