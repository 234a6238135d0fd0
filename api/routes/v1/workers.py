"""`/v1/workers`: the live workers, their queues, devices and loaded models."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import OwnerDep, SessionDep, SettingsDep
from api.schemas.common import problem_responses
from api.schemas.workers import WorkerList
from api.services import workers as service

router = APIRouter(prefix="/workers", tags=["workers"], responses=problem_responses(401))


@router.get(
    "",
    summary="List the live workers",
    description="Every worker process that renewed its heartbeat within the last few beats "
    "(STYLEGAN_HEARTBEAT_SECONDS): its queues, device and the models it holds loaded. "
    "`/readyz` is 503 while a queue has none.",
)
def list_workers(session: SessionDep, settings: SettingsDep, owner: OwnerDep) -> WorkerList:
    return service.list_workers(session, settings, owner)
