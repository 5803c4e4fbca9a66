"""The FastAPI application: ``create_app(settings)``; ``app`` for ``uvicorn app.main:app``."""

from __future__ import annotations

from fastapi import FastAPI

from app.config import Settings
from app.customers.router import router as customers_router
from app.errors import register_error_handlers
from app.health.router import router as health_router
from app.lifespan import make_lifespan
from app.messaging.router import messages_router, queues_router, topics_router
from app.middleware import BodySizeLimit
from app.profiles.router import router as profiles_router
from app.reporting.router import router as reporting_router
from app.sessions.middleware import SessionCookies
from app.sessions.router import router as sessions_router
from app.trips.router import drivers_router, trips_router
from app.users.router import router as users_router
from app.videos.router import router as videos_router

# Request bodies above this are refused with 413 before they are read into memory; a profile
# (256 fields of up to 64 KiB each) could be larger, but no sensible one is.
MAX_BODY_BYTES = 1024 * 1024


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; settings are loaded at start-up when not given."""
    app = FastAPI(
        title="MemoryDB microservices",
        summary="Redis Cluster as the primary database and message bus for microservices",
        version="0.1.0",
        lifespan=make_lifespan(settings),
    )
    app.add_middleware(SessionCookies)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    register_error_handlers(app)
    # Requests are matched against the routers in this order: the busiest first.
    app.include_router(profiles_router)
    app.include_router(health_router)
    app.include_router(reporting_router)
    app.include_router(customers_router)
    app.include_router(users_router)
    app.include_router(sessions_router)
    app.include_router(queues_router)
    app.include_router(topics_router)
    app.include_router(messages_router)
    app.include_router(videos_router)
    app.include_router(trips_router)
    app.include_router(drivers_router)
    return app


app = create_app()
