"""Unknown query parameters are refused on every route (`api.deps.reject_unknown_query_params`, installed
once by create_app), as unknown JSON body fields already are; declared ones, a route's own or its
dependencies', still pass."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Query
from fastapi.testclient import TestClient
from pydantic import BaseModel

from api.deps import declared_query_params, reject_unknown_query_params
from api.errors import install_error_handlers
from worker import jobs


def _refused(response: httpx.Response, *names: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == "/problems/unknown-query-parameter"
    assert [e["field"] for e in body["errors"]] == [f"query {n}" for n in names]
    for name in names:
        assert f"query {name}: unknown parameter" in body["detail"]
    return body


def test_a_sampling_route_refuses_trunc_and_names_psi(client: TestClient) -> None:
    body = _refused(client.get("/v1/models/no-such-model/images/1.png?trunc=0.5"), "trunc")
    assert '(got "0.5")' in body["detail"]
    assert "psi" in body["detail"], "the detail lists what the route does accept"
    # Declared parameters get past the check: the answer is about the (missing) model, not the query.
    response = client.get("/v1/models/no-such-model/images/1.png?psi=0.5&noise=random&class=0")
    assert response.status_code == 404, response.text
    # Bad values of declared parameters are still validation errors, as before.
    assert client.get("/v1/models/no-such-model/images/1.png?psi=nan").status_code == 422


def test_the_jobs_list_refuses_misspelt_parameters(client: TestClient) -> None:
    _refused(client.get("/v1/jobs?limt=2&ofset=1"), "limt", "ofset")
    _refused(client.get("/v1/jobs?limit=2&Limit=3"), "Limit")  # names are case-sensitive
    ok = client.get("/v1/jobs", params={"limit": 2, "offset": 0, "state": "queued", "kind": "probe"})
    assert ok.status_code == 200 and ok.json()["total"] == 0


def test_events_refuse_unknown_and_accept_after(client: TestClient) -> None:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        job, _ = jobs.submit_job(session, kind="probe", params={})
        jobs.request_cancel(session, job.id)  # terminal, so the stream below ends
    _refused(client.get(f"/v1/jobs/{job.id}/events?since=0"), "since")
    stream = client.get(f"/v1/jobs/{job.id}/events?after=0")
    assert stream.status_code == 200 and "event: state" in stream.text


def test_post_routes_and_routes_without_query_parameters(client: TestClient) -> None:
    body = _refused(client.post("/v1/jobs?priority=high", json={"kind": "probe", "params": {}}), "priority")
    assert "this route accepts query parameters: none" in body["detail"]
    _refused(client.get("/healthz?verbose=1"), "verbose")
    assert client.get("/healthz").status_code == 200


class Page(BaseModel):
    page: int = 1
    page_size: int = Query(default=10, alias="pageSize")


def _filter(q: Annotated[str | None, Query(alias="search")] = None) -> str | None:
    return q


def _nested(found: Annotated[str | None, Depends(_filter)], verbose: bool = False) -> str | None:
    return found


def test_parameters_of_dependencies_and_query_models_count_as_declared() -> None:
    app = FastAPI(dependencies=[Depends(reject_unknown_query_params)])
    install_error_handlers(app)

    @app.get("/items")
    def items(
        found: Annotated[str | None, Depends(_nested)], paging: Annotated[Page, Query()], sort: str = "id"
    ) -> dict[str, Any]:
        return {"found": found, "page": paging.page, "size": paging.page_size, "sort": sort}

    route = next(r for r in app.routes if getattr(r, "path", None) == "/items")
    assert declared_query_params(route) == {"search", "verbose", "page", "pageSize", "sort"}  # type: ignore[arg-type]
    client = TestClient(app)
    ok = client.get("/items?search=cat&verbose=true&page=2&pageSize=5&sort=name")
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"found": "cat", "page": 2, "size": 5, "sort": "name"}
    _refused(client.get("/items?q=cat&page_size=5"), "q", "page_size")  # not the aliases' names
