"""Liveness and readiness, outside `/v1` because orchestrators, not clients, call them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import SettingsDep
from api.errors import ProblemResponse, problem
from api.schemas.common import problem_responses
from worker.health import check_broker, check_database, check_storage, check_workers

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database, broker and storage are reachable and every queue has a live worker",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "status": "ready",
                        "checks": {
                            "database": {"ok": True, "detail": "sqlite reachable"},
                            "broker": {"ok": True, "detail": "redis reachable"},
                            "storage": {"ok": True, "detail": "data/storage writable"},
                            "workers": {"ok": True, "detail": "inference: 1 worker, training: 1 worker"},
                        },
                    }
                }
            }
        },
        **problem_responses(503),
    },
)
def readyz(settings: SettingsDep) -> Any:
    # A sync route: the checks block (socket connects with timeouts), so FastAPI runs them in its
    # thread pool rather than on the event loop.
    checks: dict[str, dict[str, Any]] = {}
    for name, check in (
        ("database", check_database),
        ("broker", check_broker),
        ("storage", check_storage),
        ("workers", check_workers),
    ):
        try:
            ok, detail = check(settings)
        except Exception as exc:  # a check that crashes is a failed check, with its reason
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        checks[name] = {"ok": bool(ok), "detail": str(detail)}
    failed = [name for name, result in checks.items() if not result["ok"]]
    if failed:
        reasons = "; ".join(f"{name}: {checks[name]['detail']}" for name in failed)
        response: ProblemResponse = problem(
            503,
            "Service unavailable",
            f"not ready: {reasons}",
            slug="not-ready",
            checks=checks,
            failed=failed,
        )
        return response
    return JSONResponse({"status": "ready", "checks": checks})
