"""A reusable consumer-group loop over one Redis stream.

The loop never acknowledges anything itself: the batch handler stores the effect and
acknowledges in one server-side step, so an entry is either applied and acknowledged or neither
(handlers validate what they read before writing, since Redis does not undo a script that fails
half-way).
Whatever a crash interrupts stays pending and comes back: the same consumer re-reads its own
pending entries when it starts again (stable consumer names make that work), and any consumer
claims entries that a dead one left idle longer than ``claim_min_idle_ms`` (XAUTOCLAIM).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from app.config import WorkerSettings
from app.domain import ConsumerSpec, StopConsuming, StreamEntry
from app.logs import log_context
from app.redis import RedisStore, describe

logger = logging.getLogger(__name__)

NEW_ENTRIES = ">"
OWN_PENDING_FROM_START = "0"
CURSOR_DONE = "0-0"


@dataclass
class ConsumerStats:
    """Counters a health check or a test can read."""

    batches: int = 0
    delivered: int = 0
    acknowledged: int = 0
    claimed: int = 0
    lost: int = 0
    errors: int = 0


class StreamConsumer:
    """Consume ``stream`` as ``consumer`` of ``spec.group`` until ``stop()``.

    ``housekeeping`` (the stream's retention) runs with each look for stale entries, every
    ``claim_interval_s``; a failure there is logged and does not stop the consumption.
    """

    def __init__(
        self,
        *,
        store: RedisStore,
        spec: ConsumerSpec,
        stream: str,
        consumer: str,
        settings: WorkerSettings,
        housekeeping: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.store = store
        self.spec = spec
        self.stream = stream
        self.consumer = consumer
        self.settings = settings
        self.handle = spec.handle
        self.housekeeping = housekeeping
        self.stats = ConsumerStats()
        self._stopping = asyncio.Event()
        self._next_claim = 0.0

    def stop(self) -> None:
        """Ask the loop to finish its current batch and return."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Run until stopped: recreate the group if needed, finish own pending, then read new."""
        # Every line of this loop and of the batch handler carries these fields.
        with log_context(stream=self.stream, group=self.spec.group, consumer=self.consumer):
            await self._run()

    async def _run(self) -> None:
        logger.info("consumer starting")
        while not self.stopping:
            try:
                await self._ensure_group()
                await self._finish_own_pending()
                while not self.stopping:
                    await self._claim_stale_if_due()
                    await self._read(NEW_ENTRIES, block_ms=self.settings.block_ms)
            except ResponseError as exc:
                if str(exc).startswith("UNBLOCKED"):
                    # The stream's slot moved to another node (a resize) while this read
                    # blocked on it: routine; the next read goes to the new node.
                    logger.warning("blocking read ended by a slot move: %s", exc)
                    continue
                if "NOGROUP" not in str(exc):
                    await self._back_off(exc)
                    continue
                # A restarted or flushed Redis lost the group: create it again and go on.
                logger.warning("consumer group vanished, recreating")
            except Exception as exc:
                await self._back_off(exc)
        logger.info("consumer stopped: acknowledged=%d", self.stats.acknowledged)

    async def _back_off(self, exc: Exception) -> None:
        self.stats.errors += 1
        logger.error("consumer error, backing off: error=%s", describe(exc), exc_info=exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.settings.error_backoff_s)

    async def _ensure_group(self) -> None:
        try:
            # From id 0: events written before the group existed are consumed too.
            async with self._deadline():
                await self.store.client.xgroup_create(
                    self.stream, self.spec.group, id="0", mkstream=True
                )
            logger.info("created consumer group")
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _finish_own_pending(self) -> None:
        while not self.stopping:
            if await self._read(OWN_PENDING_FROM_START, block_ms=None) == 0:
                return

    async def _read(self, start: str, *, block_ms: int | None) -> int:
        async with self._deadline(block_ms or 0):
            reply = await self.store.client.xreadgroup(
                self.spec.group,
                self.consumer,
                {self.stream: start},
                count=self.settings.batch_size,
                block=block_ms,
            )
        entries = delivered_entries(reply)
        if entries:
            await self._apply(entries)
        return len(entries)

    def _report_lost(self, ids: list[str]) -> None:
        # Deleted (trimmed, XDEL) while pending: the entry's data is gone and cannot be applied.
        self.stats.lost += len(ids)
        logger.error("pending entries were deleted before processing: ids=%s", ids)

    async def _claim_stale_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_claim:
            return
        self._next_claim = now + self.settings.claim_interval_s
        if self.housekeeping is not None:
            await self._keep_house(self.housekeeping)
        cursor = CURSOR_DONE
        while not self.stopping:
            async with self._deadline():
                cursor, claimed, deleted = await self.store.client.xautoclaim(
                    self.stream,
                    self.spec.group,
                    self.consumer,
                    min_idle_time=self.settings.claim_min_idle_ms,
                    start_id=cursor,
                    count=self.settings.batch_size,
                )
            if deleted:  # XAUTOCLAIM already took them off the pending list
                self._report_lost(deleted)
            claimed = usable_entries(claimed)
            if claimed:
                self.stats.claimed += len(claimed)
                logger.info("claimed stale entries: count=%d", len(claimed))
                await self._apply(claimed)
            if cursor == CURSOR_DONE:
                return

    async def _keep_house(self, housekeeping: Callable[[], Awaitable[object]]) -> None:
        try:
            async with self._deadline():
                await housekeeping()
        except StopConsuming as exc:
            logger.error("consumer stopping: %s", exc)
            self.stop()
        except Exception as exc:
            # The retention waits for the next turn; the consumption goes on.
            self.stats.errors += 1
            logger.warning("stream housekeeping failed: error=%s", describe(exc))

    def _deadline(self, block_ms: int = 0) -> asyncio.Timeout:
        """Bound one call (the client has no socket timeout): its blocking time plus the
        store's per-call timeout; a call that hangs raises TimeoutError and the loop backs off."""
        return asyncio.timeout(block_ms / 1000 + self.store.retry.timeout_s)

    async def _apply(self, entries: list[StreamEntry]) -> None:
        if vanished := [entry_id for entry_id, fields in entries if not fields]:
            # Still handed to the handler, which acknowledges them off the pending list.
            self._report_lost(vanished)
        acknowledged = await self.handle(self.store, self.stream, entries)
        self.stats.batches += 1
        self.stats.delivered += len(entries)
        self.stats.acknowledged += acknowledged


def delivered_entries(reply: Any) -> list[StreamEntry]:
    """Return the entries of an XREADGROUP reply: ``[[stream, [(id, fields), ...]], ...]``."""
    return [entry for _stream, entries in reply or () for entry in usable_entries(entries)]


def usable_entries(entries: list[Any]) -> list[StreamEntry]:
    """Return redis-py's ``(id, fields)`` pairs as entries: an entry deleted since its delivery
    gets no fields, and one without an id (redis-py's shape for a nil) has nothing to
    acknowledge and is left out."""
    return [(entry[0], entry[1] or {}) for entry in entries if entry[0] is not None]
