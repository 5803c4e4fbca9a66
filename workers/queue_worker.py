"""A reusable loop that consumes a queue: up to ``concurrency`` messages handled at once.

Each leased message goes to the handler; a handler that returns acknowledges it, one that
raises gives it back (``nack`` with ``retry_delay_s``) so it is delivered again, up to the
queue's ``max_deliveries``, then dead-lettered. A worker that dies mid-message only delays it:
its lease ends and the message is delivered to another. Handlers must therefore be safe to run
again for the same message.

The worker leases only as many messages as it has free handlers (``concurrency``, 1 by
default), and starts each one's handler at once: messages leased together but handled one after
another would see their leases run out while they wait, and be handled twice. While a handler
runs, the worker extends its message's lease every ``extend_every_s`` to ``lease_s`` from then,
so a slow handler keeps its message. Acknowledgements are sent in batches: each handler that
returns adds its message to the next ``ack_each`` call, which goes out as soon as the previous
one has answered (one call under light load, a batch of everything finished meanwhile under
heavy load).
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
    """Consume ``queue`` as ``consumer`` until ``stop()``, handling up to ``concurrency``
    messages at once."""

    def __init__(
        self,
        *,
        queue: LeasedQueue[L],
        consumer: str,
        handle: Callable[[L], Awaitable[object]],
        missing: type[Exception] = NotFound,
        concurrency: int = 1,
        lease_s: float = 30.0,
        extend_every_s: float = 10.0,
        retry_delay_s: float = 1.0,
        error_backoff_s: float = 0.5,
    ) -> None:
        self.queue = queue
        self.consumer = consumer
        self.handle = handle
        self.missing = missing
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.extend_every_s = extend_every_s
        self.retry_delay_s = retry_delay_s
        self.error_backoff_s = error_backoff_s
        self.stats = QueueWorkerStats()
        self._stopping = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()
        # Acknowledgements waiting for the next ack_each call, and the task sending them.
        self._acks: list[tuple[L, asyncio.Future[str | None]]] = []
        self._acking: asyncio.Task[None] | None = None

    def stop(self) -> None:
        """Ask the loop to finish the messages it holds and return."""
        self._stopping.set()

    async def run(self) -> None:
        """Run until stopped: lease, handle and settle messages."""
        # Every line of this loop carries these fields; a message's lines carry its id too.
        with log_context(queue=self.queue.name, consumer=self.consumer):
            await self._run()

    async def _run(self) -> None:
        logger.info("queue worker starting: concurrency=%d", self.concurrency)
        while not self._stopping.is_set():
            try:
                free = self.concurrency - len(self._handlers)
                if free == 0:
                    await asyncio.wait(self._handlers, return_when=asyncio.FIRST_COMPLETED)
                    continue
                leased = await self.queue.receive(
                    consumer=self.consumer, limit=free, wait_s=RECEIVE_WAIT_S
                )
                for delivery in leased:
                    handler = asyncio.create_task(
                        self._handle_logged(delivery),
                        name=f"handle:{self.queue.name}:{delivery.id}",
                    )
                    self._handlers.add(handler)
                    handler.add_done_callback(self._handlers.discard)
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
        # Finish the messages held (their leases are kept meanwhile) and send their acks.
        await asyncio.gather(*self._handlers, return_exceptions=True)
        logger.info("queue worker stopped: handled=%d", self.stats.handled)

    async def _handle_logged(self, delivery: L) -> None:
        with log_context(message_id=delivery.id):
            try:
                await self._handle(delivery)
            except Exception as exc:
                # Settling failed past the store's retries: the lease ends and the message is
                # delivered again.
                self.stats.errors += 1
                logger.error("could not settle message: error=%s", describe(exc))

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
        await self._settle(self._ack(delivery), delivery)
        self.stats.handled += 1

    async def _ack(self, delivery: L) -> None:
        """Acknowledge in the next batch; raise what ``ack`` would (as an AppError)."""
        answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._acks.append((delivery, answer))
        if self._acking is None or self._acking.done():
            self._acking = asyncio.create_task(self._send_acks())
        refused = await answer
        if refused is not None:
            raise AppError(refused)

    async def _send_acks(self) -> None:
        while self._acks:
            batch, self._acks = self._acks, []
            try:
                refusals = await self.queue.ack_each(
                    [(delivery.id, delivery.receipt) for delivery, _answer in batch]
                )
            except Exception as exc:
                for _delivery, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            for (_delivery, answer), refused in zip(batch, refusals, strict=True):
                if not answer.done():
                    answer.set_result(refused)

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
