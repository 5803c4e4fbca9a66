"""Request dependencies: the resources the lifespan owns, as typed ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from app.etags import Precondition, parse_if_match
from app.redis import RedisStore
from workers.pool import WorkerPool


async def get_store(request: Request) -> RedisStore:
    """Return the Redis store the lifespan opened."""
    return store_of(request)


def store_of(request: Request) -> RedisStore:
    """Return the Redis store the lifespan opened, without going through FastAPI's resolver.

    ``RedisDep`` is the way in for routes; the profile routes, which the benchmark loads, take
    the ``Request`` and call this instead. Resolving a nested dependency runs FastAPI's whole
    parameter machinery once more (path, query, header and cookie parameters, the cache):
    30 to 40 us of CPU per request in the best in-process runs here (a read went from 302 to
    260 us, best of 12 rounds; ``bench/profiles_cpu.py``), though single comparisons on this
    machine vary by a fifth.
    """
    store: RedisStore = request.state.store
    return store


async def get_idempotency_key(
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> str | None:
    """Return the client's Idempotency-Key header: a retry carrying it is applied once."""
    return idempotency_key


async def get_if_match(
    if_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Precondition:
    """Return the versions the client's If-Match header accepts (any without one)."""
    return parse_if_match(if_match)


RedisDep = Annotated[RedisStore, Depends(get_store)]
IdempotencyKeyDep = Annotated[str | None, Depends(get_idempotency_key)]
IfMatchDep = Annotated[Precondition, Depends(get_if_match)]


async def get_workers(request: Request) -> WorkerPool | None:
    """Return this process's stream workers, or None when they run elsewhere."""
    workers: WorkerPool | None = request.state.workers
    return workers


WorkersDep = Annotated[WorkerPool | None, Depends(get_workers)]
