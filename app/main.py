"""The composition root: ``DOMAINS``, the one list of every domain, and ``create_app(settings)``;
``app`` for ``uvicorn app.main:app``."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app import customers, health, messaging, profiles, reporting, sessions, trips, users, videos
from app.config import Settings
from app.domain import Domain
from app.errors import register_error_handlers
from app.lifespan import make_lifespan
from app.middleware import BodySizeLimit
from app.schemas import COMMON_RESPONSES

# Requests are matched against the routers in this order: the busiest first.
DOMAINS: tuple[Domain, ...] = (
    profiles.DOMAIN,
    health.DOMAIN,
    reporting.DOMAIN,
    customers.DOMAIN,
    users.DOMAIN,
    sessions.DOMAIN,
    messaging.DOMAIN,
    videos.DOMAIN,
    trips.DOMAIN,
)

# Request bodies above this are refused with 413 before they are read into memory; a profile
# (256 fields of up to 64 KiB each) could be larger, but no sensible one is.
MAX_BODY_BYTES = 1024 * 1024


def create_app(settings: Settings | None = None, domains: Sequence[Domain] = DOMAINS) -> FastAPI:
    """Build the application of ``domains``; settings are loaded at start-up when not given."""
    # Swagger UI (/docs) and ReDoc (/redoc) from assets the service serves itself: an
    # air-gapped deployment has its docs.
    app = FastAPIOffline(
        title="MemoryDB microservices",
        summary="Redis Cluster as the primary database and message bus for microservices",
        version="0.1.0",
        lifespan=make_lifespan(settings, domains),
    )
    for domain in domains:
        for middleware in domain.middleware:
            app.add_middleware(middleware.cls, *middleware.args, **middleware.kwargs)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    register_error_handlers(app)
    for domain in domains:
        for router in domain.routers:
            app.include_router(router, responses=COMMON_RESPONSES)
    return app


app = create_app()
