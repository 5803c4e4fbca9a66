"""The lifespan owns every resource: the client, the automatic pipeline, the stream writer, the
broker and the workers. It builds them in order, hands them to the domains, and closes them in
reverse."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypedDict

from fastapi import FastAPI

from app.autopipeline import AutoPipeline
from app.config import ConfigError, Settings, load_settings
from app.domain import Context, Domain
from app.messaging import Broker
from app.metrics import flushing
from app.redis import RedisStore, connect_client, retry_policy
from app.runtime import tune_garbage_collector
from app.streams import StreamWriter
from workers.pool import WorkerPool

logger = logging.getLogger(__name__)


class AppState(TypedDict):
    """What every request sees as ``request.state``, besides each domain's own state (found
    under the domain's name, e.g. ``request.state.sessions``)."""

    store: RedisStore
    streams: StreamWriter
    broker: Broker
    workers: WorkerPool | None


@asynccontextmanager
async def open_context(settings: Settings) -> AsyncIterator[Context]:
    """Build the shared resources in order and close them in reverse on exit."""
    if not settings.redis.url:
        raise ConfigError(
            "configuration error: redis.url [env REDIS_URL] is empty: set REDIS_URL, or run "
            "`python -m app serve`, which starts an embedded local Redis Cluster"
        )
    async with AsyncExitStack() as stack:
        # Closed last: what the others count while closing is flushed too.
        await stack.enter_async_context(flushing())
        client = await connect_client(settings.redis, settings.redis.url)
        stack.push_async_callback(client.aclose)
        pipeline = AutoPipeline(timeout_s=settings.redis.socket_timeout_s)
        stack.push_async_callback(pipeline.aclose)
        store = RedisStore(client=client, retry=retry_policy(settings.redis), pipeline=pipeline)
        logger.info("connected to redis: cluster=%s", store.is_cluster)
        # Closed first: appends already accepted are sent before the pipeline and client go.
        streams = StreamWriter(store)
        stack.push_async_callback(streams.aclose)
        broker = Broker(
            store=store,
            settings=settings.messaging,
            channel_series=settings.metrics.channel_series,
        )
        yield Context(settings=settings, store=store, streams=streams, services={Broker: broker})


def make_lifespan(
    settings: Settings | None, domains: Sequence[Domain]
) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Any]]]:
    """Return the lifespan for an app of ``domains`` (settings None: load them at start-up)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        try:
            active = settings or load_settings()
            async with AsyncExitStack() as stack:
                context = await stack.enter_async_context(open_context(active))
                context = dataclasses.replace(context, domains=tuple(domains))
                workers = None
                if active.workers.enabled:
                    workers = await stack.enter_async_context(
                        WorkerPool(context=context, domains=domains)
                    )
                state = AppState(
                    store=context.store,
                    streams=context.streams,
                    broker=context.need(Broker),
                    workers=workers,
                )
                domain_states = {
                    domain.name: await domain.setup(context)
                    for domain in domains
                    if domain.setup is not None
                }
                tune_garbage_collector()
                yield {**state, **domain_states}
                logger.info("shutting down: draining workers, closing redis")
        except ConfigError as exc:
            logger.error("%s", exc)
            raise

    return lifespan
