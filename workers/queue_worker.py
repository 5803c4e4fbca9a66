"""A reusable loop that consumes a queue, one lease at a time.

Each leased message goes to the handler; a handler that returns acknowledges it, one that
raises gives it back (``nack`` with ``retry_delay_s``) so it is delivered again, up to the
queue's ``max_deliveries``, then dead-lettered. A worker that dies mid-message only delays it:
its lease ends and the message is delivered to another. Handlers must therefore be safe to run
again for the same message.

While a handler runs, the worker extends the message's lease every ``extend_every_s`` to
``lease_s`` from then, so a slow handler keeps its message, and it leases one message at a time
by default (``batch``): messages leased together but handled one after another would see their
leases run out while they wait, and be handled twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic

from app.domain import L, LeasedQueue
from app.errors import AppError, NotFound
from app.logs import log_context
from app.redis import describe

logger = logging.getLogger(__name__)
# How long one receive waits for a message: bounds how long stop() takes to be noticed.
RECEIVE_WAIT_S = 1.0


@dataclass
class QueueWorkerStats:
    handled: int = 0
    failed: int = 0
    errors: int = 0


class QueueWorker(Generic[L]):
    """Consume ``queue`` as ``consumer`` until ``stop()``, handling ``batch`` leases per receive."""

    def __init__(
        self,
        *,
        queue: LeasedQueue[L],
        consumer: str,
        handle: Callable[[L], Awaitable[object]],
        missing: type[Exception] = NotFound,
        batch: int = 1,
        lease_s: float = 30.0,
        extend_every_s: float = 10.0,
        retry_delay_s: float = 1.0,
        error_backoff_s: float = 0.5,
    ) -> None:
        self.queue = queue
        self.consumer = consumer
        self.handle = handle
        self.missing = missing
        self.batch = batch
        self.lease_s = lease_s
        self.extend_every_s = extend_every_s
        self.retry_delay_s = retry_delay_s
        self.error_backoff_s = error_backoff_s
        self.stats = QueueWorkerStats()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask the loop to finish the messages it holds and return."""
        self._stopping.set()

    async def run(self) -> None:
        """Run until stopped: lease, handle and settle messages."""
        # Every line of this loop carries these fields; a message's lines carry its id too.
        with log_context(queue=self.queue.name, consumer=self.consumer):
            await self._run()

    async def _run(self) -> None:
        logger.info("queue worker starting")
        while not self._stopping.is_set():
            try:
                leased = await self.queue.receive(
                    consumer=self.consumer, limit=self.batch, wait_s=RECEIVE_WAIT_S
                )
                for delivery in leased:
                    with log_context(message_id=delivery.id):
                        await self._handle(delivery)
            except self.missing:
                # The queue is not created yet (its producers create it on first use).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), RECEIVE_WAIT_S)
            except Exception as exc:
                self.stats.errors += 1
                logger.error(
                    "queue worker error, backing off: error=%s",
                    describe(exc),
                    exc_info=not isinstance(exc, AppError),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.error_backoff_s)
        logger.info("queue worker stopped: handled=%d", self.stats.handled)

    async def _handle(self, delivery: L) -> None:
        keeper = asyncio.create_task(
            self._keep_lease(delivery), name=f"keep-lease:{self.queue.name}:{delivery.id}"
        )
        try:
            await self.handle(delivery)
        except Exception as exc:
            self.stats.failed += 1
            logger.warning(
                "message failed, giving it back: attempt=%d error=%s",
                delivery.attempt,
                describe(exc),
            )
            failed = True
        else:
            failed = False
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if failed:
            retry = self.queue.nack(delivery.id, delivery.receipt, delay_s=self.retry_delay_s)
            await self._settle(retry, delivery)
            return
        await self._settle(self.queue.ack(delivery.id, delivery.receipt), delivery)
        self.stats.handled += 1

    async def _keep_lease(self, delivery: L) -> None:
        """Extend the lease while the handler runs; stop when it is lost."""
        while True:
            await asyncio.sleep(self.extend_every_s)
            try:
                await self.queue.extend(
                    delivery.id, delivery.receipt, visibility_timeout_s=self.lease_s
                )
            except AppError as exc:
                logger.warning("lease lost while handling: error=%s", exc.message)
                return
            except Exception as exc:
                logger.warning("could not extend lease, trying again: error=%s", describe(exc))

    async def _settle(self, step: Awaitable[None], delivery: L) -> None:
        try:
            await step
        except AppError as exc:
            # The lease ended first (the handler outlived the visibility timeout): the message
            # is, or will be, delivered again; the handler's effect must bear a second run.
            logger.warning("could not settle message: error=%s", exc.message)
