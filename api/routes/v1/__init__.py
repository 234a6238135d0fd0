"""Version 1 of the HTTP API; each resource has its own router module."""

from fastapi import APIRouter

from api.routes.v1 import (
    artifacts,
    datasets,
    directions,
    events,
    images,
    jobs,
    models,
    projections,
    training,
    workers,
)

router = APIRouter()
router.include_router(jobs.router)
router.include_router(images.router)
router.include_router(directions.router)
router.include_router(events.router)
router.include_router(datasets.router)
router.include_router(training.router)
router.include_router(projections.router)
router.include_router(models.router)
router.include_router(artifacts.router)
router.include_router(workers.router)
