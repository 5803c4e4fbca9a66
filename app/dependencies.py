"""Request dependencies: the resources the lifespan owns, as typed ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from app.domain import WorkerHealth
from app.redis import RedisStore
from app.streams import StreamWriter


async def get_store(request: Request) -> RedisStore:
    """Return the Redis store the lifespan opened."""
    return store_of(request)


def store_of(request: Request) -> RedisStore:
    """Return the Redis store the lifespan opened, without going through FastAPI's resolver.

    ``RedisDep`` is the way in for routes; the profile routes, which the benchmark loads, take
    the ``Request`` and call this instead: resolving a nested dependency runs FastAPI's whole
    parameter machinery once more (path, query, header and cookie parameters, the cache), a
    visible share of a read's CPU (docs/benchmarks.md).
    """
    store: RedisStore = request.state.store
    return store


def streams_of(request: Request) -> StreamWriter:
    """Return the stream writer the lifespan built (see ``store_of`` for why not a Depends)."""
    streams: StreamWriter = request.state.streams
    return streams


async def get_idempotency_key(
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> str | None:
    """Return the client's Idempotency-Key header: a retry carrying it is applied once."""
    return idempotency_key


RedisDep = Annotated[RedisStore, Depends(get_store)]
IdempotencyKeyDep = Annotated[str | None, Depends(get_idempotency_key)]


async def get_workers(request: Request) -> WorkerHealth | None:
    """Return this process's workers, or None when they run elsewhere."""
    workers: WorkerHealth | None = request.state.workers
    return workers


WorkersDep = Annotated[WorkerHealth | None, Depends(get_workers)]
