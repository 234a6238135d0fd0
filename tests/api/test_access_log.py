"""One access line per request (api/access_log.py): method, the matched route's template, status and
latency in ms; never the raw path's ids or the query string. uvicorn's own access log is off in
`stylegan serve` and the line goes where uvicorn's went."""

from __future__ import annotations

import logging
import logging.config
import re

import pytest
from fastapi.testclient import TestClient

from api.access_log import ACCESS_LOGGER, uvicorn_log_config

LINE = re.compile(r"^(?P<method>[A-Z]+) (?P<route>\S+) (?P<status>\d{3}) (?P<ms>\d+\.\d)ms$")


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[re.Match[str]]:
    lines = []
    for record in caplog.records:
        if record.name == ACCESS_LOGGER:
            match = LINE.match(record.getMessage())
            assert match, record.getMessage()
            lines.append(match)
    return lines


def test_one_line_per_request_with_the_route_template(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    job_id = "0b3f8c8e-0000-4000-8000-000000000001"
    assert client.get(f"/v1/jobs/{job_id}?secret=hunter2").status_code == 422
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert client.get("/v1/models/m-1/images/42.png", params={"psi": 0.5}).status_code == 404
    assert client.get("/healthz").status_code == 200
    assert client.get("/no/such/route").status_code == 404

    lines = _access_lines(caplog)
    assert [(m["method"], m["route"], m["status"]) for m in lines] == [
        ("GET", "/v1/jobs/{job_id}", "422"),
        ("GET", "/v1/jobs/{job_id}", "404"),
        ("GET", "/v1/models/{model_id}/images/{seed}.{format}", "404"),
        ("GET", "/healthz", "200"),
        ("GET", "<unmatched>", "404"),
    ]
    assert all(float(m["ms"]) >= 0 for m in lines)
    assert job_id not in caplog.text and "hunter2" not in caplog.text and "psi" not in caplog.text
    (record,) = [r for r in caplog.records if r.name == ACCESS_LOGGER and r.getMessage().startswith("GET /h")]
    assert (record.method, record.route, record.status) == ("GET", "/healthz", 200)  # type: ignore[attr-defined]
    assert record.latency_ms >= 0  # type: ignore[attr-defined]


def test_a_failing_route_is_logged_as_500(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    client.app.add_api_route("/boom/{n}", boom)  # type: ignore[attr-defined]
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    assert client.get("/boom/1").status_code == 500
    assert [(m["route"], m["status"]) for m in _access_lines(caplog)] == [("/boom/{n}", "500")]


def test_uvicorn_logging_config_routes_the_access_line_and_keeps_uvicorns() -> None:
    config = uvicorn_log_config()
    ours = config["loggers"][ACCESS_LOGGER]
    assert ours["level"] == "INFO" and ours["propagate"] is False
    (handler,) = ours["handlers"]
    assert config["handlers"][handler]["formatter"] == "default"
    assert config["handlers"][handler]["stream"] == "ext://sys.stdout"
    # uvicorn's own loggers (startup, errors) are left as they are.
    assert config["loggers"]["uvicorn"]["handlers"] == ["default"]
    logging.config.dictConfig({**config, "loggers": {}})  # the handlers and formatters build
