"""The lifespan owns every resource: the Redis client and the stream workers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI

from app.config import ConfigError, Settings, load_settings
from app.messaging.broker import Broker
from app.redis import RedisStore, connect
from app.runtime import tune_garbage_collector
from app.sessions.service import SessionConfig
from app.trips.service import TripsConfig, server_has_json
from workers.pool import WorkerPool

logger = logging.getLogger(__name__)


class AppState(TypedDict):
    """What every request sees as ``request.state``."""

    store: RedisStore
    workers: WorkerPool | None
    sessions: SessionConfig
    broker: Broker
    trips: TripsConfig


def make_lifespan(
    settings: Settings | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[AppState]]:
    """Return the lifespan for an app built with ``settings`` (None: load them at start-up)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[AppState]:
        try:
            active = settings or load_settings()
        except ConfigError as exc:
            logger.error("%s", exc)
            raise
        if not active.redis.url:
            message = (
                "configuration error: redis.url [env REDIS_URL] is empty: set REDIS_URL, or run "
                "`python -m app serve`, which starts an embedded local Redis Cluster"
            )
            logger.error("%s", message)
            raise ConfigError(message)
        async with AsyncExitStack() as stack:
            store = await connect(active.redis, active.redis.url)
            stack.push_async_callback(store.aclose)
            logger.info("connected to redis: cluster=%s", store.is_cluster)
            broker = Broker(store=store, settings=active.messaging)
            workers = None
            if active.workers.enabled:
                workers = await stack.enter_async_context(
                    WorkerPool(broker=broker, settings=active)
                )
            tune_garbage_collector()
            sessions = SessionConfig.from_settings(active.sessions)
            trips = TripsConfig(
                region_size_deg=active.trips.region_size_deg,
                native_json=await server_has_json(store),
            )
            logger.info("trip documents: native_json=%s", trips.native_json)
            yield AppState(
                store=store, workers=workers, sessions=sessions, broker=broker, trips=trips
            )
            logger.info("shutting down: draining workers, closing redis")

    return lifespan
