"""The owner of a process's workers: builds them from the domains' specs, runs, drains them."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

from app.config import WorkerSettings
from app.domain import ConsumerSpec, Context, Domain
from workers.consumer import StreamConsumer
from workers.queue_worker import QueueWorker

logger = logging.getLogger(__name__)

PROCESS_INDEX_ENV = "APP_PROCESS_INDEX"


def consumer_prefix(settings: WorkerSettings) -> str:
    """Return this process's stable consumer name prefix.

    ``python -m app serve`` gives each of its processes a slot index (APP_PROCESS_INDEX) that a
    restarted process keeps, so it finds its own pending entries again. A process started some
    other way without that variable is named by its pid; what it leaves pending is claimed by
    the others after ``claim_min_idle_ms``.
    """
    base = settings.consumer_name or socket.gethostname()
    index = os.environ.get(PROCESS_INDEX_ENV) or f"pid{os.getpid()}"
    return f"{base}-{index}"


def _housekeeping(
    spec: ConsumerSpec, context: Context, stream: str, slot: int
) -> Callable[[], Awaitable[object]] | None:
    """Return the stream's housekeeping for the process's first consumer of it, else None."""
    housekeeping = spec.housekeeping
    if housekeeping is None or slot != 0:
        return None
    return lambda: housekeeping(context.store, stream, context.settings)


class WorkerPool:
    """Run every worker the domains declare (stream consumers, queue workers) as one unit."""

    def __init__(self, *, context: Context, domains: Sequence[Domain]) -> None:
        settings = context.settings
        self.settings = settings.workers
        prefix = consumer_prefix(settings.workers)
        self.consumers = [
            StreamConsumer(
                store=context.of(domain.name).store,
                spec=spec,
                stream=stream,
                consumer=f"{prefix}-{spec.name}-{slot}",
                settings=settings.workers,
                housekeeping=_housekeeping(spec, context.of(domain.name), stream, slot),
            )
            for domain in domains
            for spec in domain.consumers
            for stream in spec.streams(settings)
            for slot in range(spec.count(settings))
        ]
        self.queue_workers: list[QueueWorker[Any]] = []
        for domain in domains:
            for worker in domain.queue_workers:
                for slot in range(worker.count(settings)):
                    job = worker.job(context.of(domain.name))
                    self.queue_workers.append(
                        QueueWorker(
                            queue=job.queue,
                            consumer=f"{prefix}-{worker.name}-{slot}",
                            handle=job.handle,
                            missing=job.missing,
                            concurrency=worker.concurrency(settings),
                        )
                    )
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> WorkerPool:
        self._tasks = [
            asyncio.create_task(consumer.run(), name=f"consumer:{consumer.consumer}")
            for consumer in self.consumers
        ] + [
            asyncio.create_task(worker.run(), name=f"queue-worker:{worker.consumer}")
            for worker in self.queue_workers
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop every consumer after its current batch; cancel what outlives the drain timeout."""
        for consumer in self.consumers:
            consumer.stop()
        for worker in self.queue_workers:
            worker.stop()
        if not self._tasks:
            return
        done, pending = await asyncio.wait(self._tasks, timeout=self.settings.drain_timeout_s)
        for task in pending:
            logger.warning("consumer did not drain in time, cancelling: task=%s", task.get_name())
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.error("consumer failed: task=%s", task.get_name(), exc_info=task.exception())
        self._tasks = []

    def problem(self) -> str:
        """Return why the workers are not healthy, or '' when every consumer runs."""
        if not self._tasks and (self.consumers or self.queue_workers):
            return "workers are not running"
        for task in self._tasks:
            if task.done():
                return f"worker {task.get_name()} has stopped"
        return ""
