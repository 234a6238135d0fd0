"""The FastAPI application factory.

`create_app(settings)` builds everything a request needs (database engine, session factory, Celery
app) once, onto `app.state`; nothing is read from the environment at import, so tests build as many
apps as they like, each with its own settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api.access_log import log_access
from api.deps import reject_unknown_query_params
from api.docs import install_docs
from api.errors import install_error_handlers
from api.metrics import ObserveRequests, install_metrics
from api.middleware import BodySizeLimit
from api.routes import health
from api.routes.v1 import router as v1_router
from api.web.routes import install_web
from worker.celery_app import make_celery
from worker.db.session import make_engine, make_session_factory
from worker.settings import Settings, get_settings

DESCRIPTION = """
Serve and train style-based generators (StyleGAN2-ADA, StyleGAN3).

Work runs as **jobs**: `POST /v1/jobs` queues one and answers at once; poll `GET /v1/jobs/{id}` until
its `state` is `succeeded`, `failed` or `canceled`. Every error is `application/problem+json`
(RFC 9457) whose `detail` names the field at fault. When the service has API keys configured, send
`Authorization: Bearer <key>`; each key sees only its own jobs.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings if settings is not None else get_settings()
    engine = make_engine(settings.effective_database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="StyleGAN service",
        version="0.1.0",
        description=DESCRIPTION,
        license_info={"name": "Apache-2.0", "identifier": "Apache-2.0"},
        lifespan=lifespan,
        # Our own pages (api/docs.py), whose assets the app serves: FastAPI's load them from a CDN.
        docs_url=None,
        redoc_url=None,
        # Every route, whatever router it comes from: an unknown query parameter is a 422, not ignored.
        dependencies=[Depends(reject_unknown_query_params)],
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.celery = make_celery(settings)

    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, settings=settings)
    app.include_router(health.router)
    app.include_router(v1_router, prefix="/v1")
    install_docs(app)
    install_web(app)  # the web page at `/`, over the API above
    install_metrics(app)  # its latency middleware wraps all the others but the access log
    # Outermost: the line's latency is the whole request's.
    app.add_middleware(ObserveRequests, observe=log_access)
    return app
