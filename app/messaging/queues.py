"""Point-to-point queues: each message is leased to one consumer at a time until acknowledged.

A fifo queue keeps its ready messages in a Redis list, a priority queue in a sorted set (higher
priority first, publish order within a priority). Around the ready structure: a sorted set of
delayed messages by the time they become visible, a sorted set of leased messages by the time
their lease ends, a dead-letter list, and one hash per message (body, priority, attempts, lease).
Every step is one run of ``queue.lua`` on the queue's slot, so a step happens whole or not at
all, and the server's clock decides leases and delays.

Delivery rules:
- A receive leases messages for the queue's visibility timeout and answers a receipt per
  message; only that receipt acknowledges (``ack``), gives back (``nack``) or extends the lease.
- A lease that ends without an ack makes the message visible again (at the head of a fifo
  queue), checked by every receive, stats and dead-letter read (so it shows up for the next
  receiver, which is the only one who could take it).
- A message leased ``max_deliveries`` times whose last lease ends without an ack (expiry or
  nack) moves to the dead-letter list with the reason; ``redrive`` puts dead letters back with
  a fresh set of deliveries.
- An ack whose lease expired but whose message nobody received since still counts: the message
  was handled, and no one else holds it.

Re-sends: redis-py sends a command again after a lost reply, and clients retry. A re-sent
publish is recognised by its message id (minted before the call), a re-sent receive by its nonce
(it answers the messages the first call leased, while their leases hold), a re-sent ack or nack
by its receipt in the trace; ``dedupe_id`` makes a producer's own retry publish once.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import AppError
from app.messaging import keys
from app.messaging.channel import NOT_FOUND, Channel, milliseconds
from app.messaging.exceptions import (
    MessageNotFound,
    QueueKindConflict,
    QueueNotFound,
    WrongReceipt,
)
from app.messaging.schemas import (
    DeadLetter,
    Delivery,
    MessagePublish,
    Published,
    QueueCounts,
    QueueCreate,
    QueuePublic,
    from_ms,
)
from app.records.codec import compact_json
from app.scripting import LuaScript

if TYPE_CHECKING:
    from app.messaging.broker import Broker

QUEUE_SCRIPT = LuaScript.load(Path(__file__).with_name("queue.lua"))
WRONG_RECEIPT, CONFLICT, PRIORITY_ON_FIFO = -2, -3, -4
REDRIVE_BATCH = 500


class PriorityOnFifoQueue(AppError):
    status_code = 422

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Queue {name} is a fifo queue: priorities need a priority queue (priority must be 0)"
        )


class Queue(Channel):
    """A handle on one queue; cheap to make (``broker.queue(name)``)."""

    script = QUEUE_SCRIPT

    def __init__(self, *, broker: Broker, name: str) -> None:
        super().__init__(
            broker=broker,
            name=name,
            prefix=keys.queue_prefix(name),
            script_keys=keys.queue_keys(name),
        )

    def check(self, reply: list[Any], args: tuple[str, ...]) -> None:
        if reply[0] == NOT_FOUND:
            raise QueueNotFound(self.name)
        if reply[0] == PRIORITY_ON_FIFO:
            raise PriorityOnFifoQueue(self.name)

    async def create(self, settings: QueueCreate) -> bool:
        """Create the queue, or change its timeout and deliveries; return whether it is new.

        Raise QueueKindConflict when it exists with another kind.
        """
        status, kind = await self.run(
            "create",
            settings.kind,
            milliseconds(settings.visibility_timeout_s),
            str(settings.max_deliveries),
            what="create queue",
        )
        if status == CONFLICT:
            raise QueueKindConflict(self.name, kind)
        return bool(status == 1)

    async def info(self) -> QueuePublic:
        """Return the queue's settings and counts; raise QueueNotFound."""
        _, kind, visibility_ms, max_deliveries, created_at, counts = await self.run(
            "config", str(self.broker.settings.housekeeping_batch), what="read queue"
        )
        return QueuePublic(
            name=self.name,
            kind=kind,
            visibility_timeout_s=int(visibility_ms) / 1000,
            max_deliveries=int(max_deliveries),
            created_at=from_ms(created_at),
            counts=_counts(counts),
        )

    async def publish(self, message: MessagePublish) -> Published:
        """Enqueue one message; raise QueueNotFound."""
        return (await self.publish_many([message]))[0]

    async def publish_many(self, messages: Sequence[MessagePublish]) -> list[Published]:
        """Enqueue messages in order, a few hundred per server step; answer their ids.

        Every message is stored (and its trace begun) before this returns. A message whose
        ``dedupe_id`` was seen within the window is not enqueued: its answer names the first
        message, with ``duplicate`` set.
        """
        rows = [
            [
                compact_json(message.body),
                str(message.priority),
                milliseconds(message.delay_s),
                message.dedupe_id or "",
            ]
            for message in messages
        ]
        return await self.publish_rows(rows, what="publish messages")

    async def receive(self, *, consumer: str, limit: int = 10, wait_s: float = 0) -> list[Delivery]:
        """Lease up to ``limit`` messages to ``consumer``, waiting up to ``wait_s`` for one."""
        return await self.poll(lambda: self._receive_once(consumer, limit), wait_s)

    async def _receive_once(self, consumer: str, count: int) -> list[Delivery]:
        nonce = secrets.token_urlsafe(12)
        _, leased = await self.run(
            "receive",
            consumer,
            str(count),
            nonce,
            str(self.broker.settings.housekeeping_batch),
            what="receive messages",
        )
        return [
            # Built without validation: every field comes from the script, in its type.
            Delivery.model_construct(
                id=message_id,
                body=json.loads(body),
                attempt=int(attempt),
                receipt=receipt,
                priority=int(priority),
                published_at=from_ms(published_at),
                lease_expires_at=from_ms(lease_until),
            )
            for message_id, body, attempt, receipt, priority, published_at, lease_until in leased
        ]

    async def ack(self, message_id: str, receipt: str) -> None:
        """Acknowledge a leased message: it is done and removed. Raise on a wrong receipt."""
        (status,) = await self.ack_many([(message_id, receipt)])
        raise_for_status(status, message_id)

    async def ack_many(self, settled: Sequence[tuple[str, str]]) -> list[int]:
        """Acknowledge (id, receipt) pairs in one step; answer a status per pair.

        1 acknowledged, 0 already acknowledged with this receipt (a repeat of an ack that
        took), NOT_FOUND or WRONG_RECEIPT.
        """
        if not settled:
            return []
        args = [part for pair in settled for part in pair]
        _, statuses = await self.run("ack", *args, what="acknowledge messages")
        return [int(status) for status in statuses]

    async def nack(self, message_id: str, receipt: str, *, delay_s: float = 0) -> None:
        """Give a leased message back: visible again after ``delay_s`` (or dead-lettered)."""
        _, status = await self.run(
            "nack", message_id, receipt, milliseconds(delay_s), what="give back a message"
        )
        raise_for_status(int(status), message_id)
        self.broker.notify(self.prefix)

    async def extend(self, message_id: str, receipt: str, *, visibility_timeout_s: float) -> Any:
        """Extend a lease to ``visibility_timeout_s`` from now; return when it now ends."""
        reply = await self.run(
            "extend", message_id, receipt, milliseconds(visibility_timeout_s), what="extend a lease"
        )
        raise_for_status(int(reply[1]), message_id)
        return from_ms(reply[2])

    async def counts(self) -> QueueCounts:
        """Return how many messages are ready, delayed, in flight and dead-lettered."""
        _, counts = await self.run(
            "stats", str(self.broker.settings.housekeeping_batch), what="count messages"
        )
        return _counts(counts)

    async def dead_letters(
        self, *, offset: int = 0, limit: int = 100
    ) -> tuple[list[DeadLetter], int]:
        """Return a page of dead letters, oldest first, and how many there are."""
        _, rows, total = await self.run(
            "dead_letters",
            str(self.broker.settings.housekeeping_batch),
            str(offset),
            str(offset + limit - 1),
            what="read dead letters",
        )
        return [
            DeadLetter(
                id=message_id,
                body=json.loads(body),
                priority=int(priority),
                attempts=int(attempts),
                reason=reason,
                published_at=from_ms(published_at),
                dead_lettered_at=from_ms(dead_at),
            )
            for message_id, body, priority, published_at, attempts, reason, dead_at in rows
        ], int(total)

    async def redrive(self, *, limit: int | None = None) -> int:
        """Put dead letters back in the queue, oldest first; return how many moved."""
        moved = 0
        while limit is None or moved < limit:
            batch = REDRIVE_BATCH if limit is None else min(REDRIVE_BATCH, limit - moved)
            _, count = await self.run(
                "redrive", str(batch), secrets.token_urlsafe(12), what="redrive dead letters"
            )
            moved += int(count)
            if int(count) < batch:
                break
        if moved:
            self.broker.notify(self.prefix)
        return moved


def _counts(raw: list[int]) -> QueueCounts:
    ready, delayed, in_flight, dead = (int(value) for value in raw)
    return QueueCounts(ready=ready, delayed=delayed, in_flight=in_flight, dead_lettered=dead)


def raise_for_status(status: int, message_id: str) -> None:
    """Turn a settle step's status about ``message_id`` into its domain error, if any."""
    if status == NOT_FOUND:
        raise MessageNotFound(message_id)
    if status == WRONG_RECEIPT:
        raise WrongReceipt(message_id)
