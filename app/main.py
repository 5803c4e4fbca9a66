"""The composition root: ``DOMAINS``, the one list of every domain, and ``create_app(settings)``;
``app`` for ``uvicorn app.main:app``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app import (
    customers,
    health,
    messaging,
    observability,
    profiles,
    reporting,
    sessions,
    trips,
    users,
    videos,
)
from app.config import Settings
from app.domain import Domain
from app.errors import register_error_handlers
from app.lifespan import make_lifespan
from app.middleware import BodySizeLimit, RequestContext
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
    observability.DOMAIN,
)

# Request bodies above this are refused with 413 before they are read into memory; a profile
# (256 fields of up to 64 KiB each) could be larger, but no sensible one is.
MAX_BODY_BYTES = 1024 * 1024

DESCRIPTION = """
The patterns of the Amazon MemoryDB blog posts as one service: profiles with an event stream
and a report, customers and validated users, durable sessions, messaging (queues, topics,
leases, dead letters, traces) with the media example, and shared trip and driver state.

Every error answers with one JSON shape: `{"message": "..."}`, plus `errors` (each problem's
`loc`, `msg` and `type`) when a request breaks the schema (422). A 503 carries `Retry-After`.
"""


def _tags(domains: Sequence[Domain]) -> list[dict[str, str]]:
    """Return the OpenAPI tags of the domains' routers, described by their domain's docstring."""
    tags: list[dict[str, str]] = []
    for domain in domains:
        text = inspect.getdoc(importlib.import_module(f"app.{domain.name}")) or ""
        summary = " ".join(text.split("\n\n")[0].split())
        for router in domain.routers:
            tags += [{"name": str(tag), "description": summary} for tag in router.tags]
    return tags


def create_app(settings: Settings | None = None, domains: Sequence[Domain] = DOMAINS) -> FastAPI:
    """Build the application of ``domains``; settings are loaded at start-up when not given."""
    # Swagger UI (/docs) and ReDoc (/redoc) from assets the service serves itself: an
    # air-gapped deployment has its docs.
    app = FastAPIOffline(
        title="MemoryDB microservices",
        summary="Redis Cluster as the primary database and message bus for microservices",
        description=DESCRIPTION,
        openapi_tags=_tags(domains),
        version="0.1.0",
        lifespan=make_lifespan(settings, domains),
    )
    for domain in domains:
        for middleware in domain.middleware:
            app.add_middleware(middleware.cls, *middleware.args, **middleware.kwargs)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    # Outermost: every answer, a 413 or an error handler's included, is counted and logged.
    app.add_middleware(RequestContext)
    register_error_handlers(app)
    for domain in domains:
        for router in domain.routers:
            app.include_router(router, responses=COMMON_RESPONSES)
    _errors_as_json(app)
    return app


def _errors_as_json(app: FastAPI) -> None:
    """Make the schema say what the server does: every error answers JSON.

    FastAPI files a route's error models under the route's own media type, so a page's 422
    would read as HTML; the error handlers answer every error as JSON (``app.errors``).
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if status[0] in "45" and "text/html" in content:
                            content.setdefault("application/json", content.pop("text/html"))
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


app = create_app()
