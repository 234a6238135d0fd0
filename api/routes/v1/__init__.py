"""Version 1 of the HTTP API; each resource has its own router module."""

from fastapi import APIRouter

from api.routes.v1 import jobs

router = APIRouter()
router.include_router(jobs.router)
