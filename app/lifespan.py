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
from app.errors import StartupRefused
from app.messaging import Broker
from app.metrics import flushing
from app.redis import RedisStore, connect_client, retry_policy
from app.runtime import tune_garbage_collector
from app.streams import StreamWriter
from workers.pool import WorkerPool

logger = logging.getLogger(__name__)


class AppState(TypedDict):
    """What every request sees as ``request.state``, besides each domain's own state (found
    under the domain's name, e.g. ``request.state.sessions``).

    A route of a service with its own Redis URL is given that service's store, stream writer
    and broker instead (``scoped``; ``app.dependencies.own_resource``).
    """

    store: RedisStore
    streams: StreamWriter
    broker: Broker
    workers: WorkerPool | None
    # Every distinct store of the process (the readiness check asks each one).
    stores: list[RedisStore]
    scoped: dict[str, dict[str, object]]


@asynccontextmanager
async def open_context(settings: Settings, domains: Sequence[Domain]) -> AsyncIterator[Context]:
    """Build the shared resources of ``domains`` in order and close them in reverse on exit.

    One client (with its pipeline, stream writer and broker) per distinct Redis URL of the
    running services: a service with its own URL (``[services.<name>] redis_url``: its own
    cluster, or its own ACL user) gets its own, found through ``Context.of``.
    """
    services = [domain.name for domain in domains if not domain.always]
    urls = {name: settings.redis_url_for(name) for name in services}
    for name, url in urls.items():
        if not url:
            raise ConfigError(
                f"configuration error: redis.url [env REDIS_URL] is empty and the service "
                f"{name!r} has no services.{name}.redis_url "
                f"[env APP_SERVICES__{name.upper()}__REDIS_URL]: set REDIS_URL, or run "
                "`python -m app serve`, which starts an embedded local Redis Cluster"
            )
    if not urls:
        raise ConfigError(
            "configuration error: server.services [env APP_SERVER__SERVICES]: no service to run"
        )
    async with AsyncExitStack() as stack:
        # Closed last: what the others count while closing is flushed too.
        await stack.enter_async_context(flushing())
        by_url: dict[str, Context] = {}
        for url in dict.fromkeys(urls.values()):
            by_url[url] = await _connect(stack, settings, url)
        first = by_url[urls[services[0]]]
        scoped: dict[str, Context] = {}
        context = dataclasses.replace(first, domains=tuple(domains), scoped=scoped)
        for name, url in urls.items():
            if by_url[url] is not first:
                scoped[name] = dataclasses.replace(
                    by_url[url], domains=tuple(domains), scoped=scoped
                )
        yield context


async def _connect(stack: AsyncExitStack, settings: Settings, url: str) -> Context:
    """Open a client and what is built on it, closing them in reverse with ``stack``."""
    client = await connect_client(settings.redis, url)
    stack.push_async_callback(client.aclose)
    pipeline = AutoPipeline(timeout_s=settings.redis.socket_timeout_s)
    stack.push_async_callback(pipeline.aclose)
    store = RedisStore(
        client=client,
        retry=retry_policy(settings.redis),
        pipeline=pipeline,
        read_from_replicas=settings.redis.read_from_replicas,
    )
    logger.info(
        "connected to redis: cluster=%s read_from_replicas=%s",
        store.is_cluster,
        store.read_from_replicas,
    )
    # Closed first: appends already accepted are sent before the pipeline and client go.
    streams = StreamWriter(store)
    stack.push_async_callback(streams.aclose)
    broker = Broker(
        store=store,
        settings=settings.messaging,
        channel_series=settings.metrics.channel_series,
    )
    return Context(settings=settings, store=store, streams=streams, services={Broker: broker})


def _resources(context: Context) -> dict[str, object]:
    """Return what a route of the domain of ``context`` finds in ``request.state``."""
    return {"store": context.store, "streams": context.streams, "broker": context.need(Broker)}


def make_lifespan(
    settings: Settings | None,
    domains: Sequence[Domain],
    check: Callable[[Settings], object] = lambda settings: None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Any]]]:
    """Return the lifespan for an app of ``domains`` (settings None: load them at start-up and
    ``check`` them: it raises ConfigError for a configuration the services refuse)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        try:
            active = settings or load_settings()
            if settings is None:
                check(active)
            async with AsyncExitStack() as stack:
                context = await stack.enter_async_context(open_context(active, domains))
                # Before any worker starts: a set-up may refuse the data (StartupRefused).
                domain_states = {
                    domain.name: await domain.setup(context.of(domain.name))
                    for domain in domains
                    if domain.setup is not None
                }
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
                    stores=context.stores(),
                    scoped={name: _resources(scoped) for name, scoped in context.scoped.items()},
                )
                tune_garbage_collector()
                yield {**state, **domain_states}
                logger.info("shutting down: draining workers, closing redis")
        except (ConfigError, StartupRefused) as exc:
            logger.error("%s", exc)
            raise

    return lifespan
