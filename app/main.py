"""The composition root: ``DOMAINS``, the one list of every domain, the services a process runs
(``running_domains``), and ``create_app(settings)``; ``app`` for ``uvicorn app.main:app``."""

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
from app.config import ConfigError, Settings, load_settings
from app.dependencies import claim_routes
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

# What ``--services`` (server.services) chooses among: every domain but those every process runs.
SERVICES: tuple[str, ...] = tuple(domain.name for domain in DOMAINS if not domain.always)

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


def running_domains(settings: Settings) -> tuple[Domain, ...]:
    """Return the domains a process with ``settings`` runs, in ``DOMAINS`` order: the services
    server.services names (all when empty) and the domains every process runs.

    Raises ConfigError, one line, for an unknown service name (in server.services or a
    ``[services.<name>]`` section) or for services that share data by design but are given
    different clusters.
    """
    chosen = settings.server.services or SERVICES
    for name, where in [
        *((name, "server.services [env APP_SERVER__SERVICES]") for name in chosen),
        *(
            (name, f"services.{name} [env APP_SERVICES__{name.upper()}__...]")
            for name in settings.services
        ),
    ]:
        if name not in SERVICES:
            raise ConfigError(
                f"configuration error: {where}: unknown service {name!r} "
                f"(services: {', '.join(SERVICES)})"
            )
    running = tuple(d for d in DOMAINS if d.always or d.name in chosen)
    # Every pair the configuration names, whether one side runs here or neither does: a shared
    # configuration file is where a split shows.
    for domain in DOMAINS:
        for partner in domain.shares_cluster_with:
            if not settings.same_cluster(domain.name, partner):
                raise ConfigError(
                    f"configuration error: services {domain.name!r} and {partner!r} share data "
                    f"by design and must use the same cluster, but "
                    f"services.{domain.name}.redis_url and services.{partner}.redis_url (or "
                    "redis.url) name different ones (docs/deployment.md)"
                )
    return running


def _configured_domains() -> tuple[Domain, ...]:
    """Return the domains the configuration names; every domain when it cannot be loaded (the
    lifespan then reports the configuration error, one line, at start-up)."""
    try:
        return running_domains(load_settings())
    except ConfigError:
        return DOMAINS


def create_app(
    settings: Settings | None = None, domains: Sequence[Domain] | None = None
) -> FastAPI:
    """Build the application of ``domains`` (default: those the settings run); settings are
    loaded at start-up when not given."""
    if domains is None:
        domains = running_domains(settings) if settings is not None else _configured_domains()
    # Swagger UI (/docs) and ReDoc (/redoc) from assets the service serves itself: an
    # air-gapped deployment has its docs.
    app = FastAPIOffline(
        title="MemoryDB microservices",
        summary="Redis Cluster as the primary database and message bus for microservices",
        description=DESCRIPTION,
        openapi_tags=_tags(domains),
        version="0.1.0",
        lifespan=make_lifespan(settings, domains, check=running_domains),
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
            if not domain.always:
                claim_routes(domain.name, router)
    _errors_as_json(app)
    return app


def _errors_as_json(app: FastAPI) -> None:
    """Make the schema say what the server does: every error answers JSON, and a link leads
    only to an operation this process serves.

    FastAPI files a route's error models under the route's own media type, so a page's 422
    would read as HTML; the error handlers answer every error as JSON (``app.errors``). A
    video's link to its job's trace is the messaging service's: gone when that does not run.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            paths = schema.get("paths", {})
            served = {
                operation.get("operationId")
                for path in paths.values()
                for operation in path.values()
            } | {
                f"#/paths/{name.replace('~', '~0').replace('/', '~1')}/{method}"
                for name, path in paths.items()
                for method in path
            }
            for path in paths.values():
                for operation in path.values():
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if status[0] in "45" and "text/html" in content:
                            content.setdefault("application/json", content.pop("text/html"))
                        links = response.get("links", {})
                        for name, link in list(links.items()):
                            target = link.get("operationId") or link.get("operationRef")
                            if target not in served:
                                del links[name]
                        if "links" in response and not links:
                            del response["links"]
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


def __getattr__(name: str) -> Any:
    """Build ``app`` on first use (``uvicorn app.main:app``), from the environment of that
    moment: importing this module builds nothing."""
    if name == "app":
        built = create_app()
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
