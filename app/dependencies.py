"""Request dependencies: the resources the lifespan owns, as typed ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request

from app.domain import WorkerHealth
from app.redis import RedisStore
from app.streams import StreamWriter

# The service of each route, by the route's id (routes are not hashable; they live as long as
# their domain's module). FastAPI puts the route a request matched, the very object of the
# service's router, in ``scope["route"]``.
_ROUTE_SERVICES: dict[int, str] = {}


def claim_routes(service: str, router: APIRouter) -> None:
    """Record that ``router``'s routes belong to ``service`` (``app.main.create_app``)."""
    for route in router.routes:
        _ROUTE_SERVICES[id(route)] = service


def own_resource(request: Request, name: str) -> Any:
    """Return the lifespan's resource ``name`` (store, streams, broker) for the service of the
    request's route: its own when it connects with its own Redis URL, else the process's."""
    state = request.state
    scoped: dict[str, dict[str, Any]] = state.scoped
    if scoped:
        service = _ROUTE_SERVICES.get(id(request.scope.get("route")))
        if service is None:
            # Never another service's client: a route whose service is unknown here (a FastAPI
            # that does not put the route in the scope) fails loudly instead.
            raise RuntimeError(f"no service known for the route of {request.url.path}")
        own = scoped.get(service)
        if own is not None:
            return own[name]
    return getattr(state, name)


async def get_store(request: Request) -> RedisStore:
    """Return the Redis store the lifespan opened for the route's service."""
    return store_of(request)


def store_of(request: Request) -> RedisStore:
    """Return the Redis store the lifespan opened, without going through FastAPI's resolver.

    ``RedisDep`` is the way in for routes; the profile routes, which the benchmark loads, take
    the ``Request`` and call this instead: resolving a nested dependency runs FastAPI's whole
    parameter machinery once more (path, query, header and cookie parameters, the cache), a
    visible share of a read's CPU (docs/benchmarks.md).
    """
    store: RedisStore = own_resource(request, "store")
    return store


def streams_of(request: Request) -> StreamWriter:
    """Return the stream writer the lifespan built (see ``store_of`` for why not a Depends)."""
    streams: StreamWriter = own_resource(request, "streams")
    return streams


async def get_stores(request: Request) -> list[RedisStore]:
    """Return every distinct store of the process (one per Redis URL its services use)."""
    stores: list[RedisStore] = request.state.stores
    return stores


async def get_idempotency_key(
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> str | None:
    """Return the client's Idempotency-Key header: a retry carrying it is applied once."""
    return idempotency_key


RedisDep = Annotated[RedisStore, Depends(get_store)]
StoresDep = Annotated[list[RedisStore], Depends(get_stores)]
IdempotencyKeyDep = Annotated[str | None, Depends(get_idempotency_key)]


async def get_workers(request: Request) -> WorkerHealth | None:
    """Return this process's workers, or None when they run elsewhere."""
    workers: WorkerHealth | None = request.state.workers
    return workers


WorkersDep = Annotated[WorkerHealth | None, Depends(get_workers)]
