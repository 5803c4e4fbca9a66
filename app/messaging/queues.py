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

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from pathlib import Path

from app.messaging import keys
from app.messaging.channel import (
    CHANNEL_LUA,
    SETTLE_ERRORS,
    Channel,
    ChannelContext,
    ChannelErrors,
    Settlement,
    columns,
    failed,
    milliseconds,
    published_result,
    settle_each,
    settle_results,
    settlements,
    timestamps,
)
from app.messaging.exceptions import PriorityOnFifoQueue, QueueKindConflict, QueueNotFound
from app.messaging.metrics import QueueEvent
from app.messaging.schemas import (
    DeadLetter,
    Delivery,
    EntryResult,
    Kind,
    MessagePublish,
    NackEntry,
    Published,
    QueueCounts,
    QueueCreate,
    QueuePublic,
    SettleEntry,
    from_ms,
)
from app.records.codec import compact_json, parse_json
from app.records.ids import parse_ulid
from app.schemas import trusted
from app.scripting import (
    LuaScript,
    Reply,
    ScriptContractError,
    as_int,
    as_int_list,
    as_list,
    as_str,
    as_str_list,
    outcome_of,
    raise_for,
)

QUEUE_SCRIPT = LuaScript.load(Path(__file__).with_name("queue.lua"), CHANNEL_LUA)
REDRIVE_BATCH = 500
# A ULID's first 48 of its 128 bits are its creation time in milliseconds.
ULID_TIME_SHIFT = 80


class QueueOutcome(IntEnum):
    """What a step of ``queue.lua`` answers first (a settling step's own outcome follows)."""

    DONE = 1
    # create: the queue existed; its visibility timeout and deliveries are updated.
    EXISTED = 0
    NOT_FOUND = -1
    CONFLICT = -3
    PRIORITY_ON_FIFO = -4


@dataclass(frozen=True)
class QueueGauge:
    """What the metrics read of a queue: its counts and its oldest ready message's age."""

    counts: QueueCounts
    # Age of the oldest message at either end of the line (see ``line_ends`` in queue.lua),
    # 0 when none is ready.
    oldest_ready_age_s: float


QUEUE_ERRORS: ChannelErrors[QueueOutcome] = {
    QueueOutcome.NOT_FOUND: lambda queue, _subject: QueueNotFound(queue),
    # The subject is the kind the queue already has.
    QueueOutcome.CONFLICT: QueueKindConflict,
    QueueOutcome.PRIORITY_ON_FIFO: lambda queue, _subject: PriorityOnFifoQueue(queue),
}


class Queue(Channel[QueueOutcome]):
    """A handle on one queue; cheap to make (``broker.queue(name)``)."""

    def __init__(self, *, context: ChannelContext, name: str) -> None:
        super().__init__(
            context=context,
            name=name,
            prefix=keys.queue_prefix(name),
            registry=keys.QUEUE_REGISTRY,
            script_keys=keys.queue_keys(name),
            script=QUEUE_SCRIPT,
            outcomes=QueueOutcome,
            errors=QUEUE_ERRORS,
        )

    @property
    def _housekeeping(self) -> str:
        return str(self.context.settings.housekeeping_batch)

    async def create(self, settings: QueueCreate) -> bool:
        """Create the queue, or change its timeout and deliveries; return whether it is new.

        Raise QueueKindConflict when it exists with another kind.
        """
        outcome, (kind,) = await self.answer(
            "create",
            settings.kind,
            milliseconds(settings.visibility_timeout_s),
            str(settings.max_deliveries),
            what="create queue",
        )
        self.check(outcome, subject=as_str(kind))
        await self.register()
        return outcome is QueueOutcome.DONE

    async def info(self) -> QueuePublic:
        """Return the queue's settings and counts; raise QueueNotFound."""
        kind, visibility_ms, max_deliveries, created_at, counts, swept = await self.run(
            "config", self._housekeeping, what="read queue"
        )
        self._count_swept(swept)
        return QueuePublic(
            name=self.name,
            kind=_kind(kind),
            visibility_timeout_s=as_int(visibility_ms) / 1000,
            max_deliveries=as_int(max_deliveries),
            created_at=from_ms(as_int(created_at)),
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
        published = await self.publish_rows(rows, what="publish messages")
        self._count("published", sum(not p.duplicate for p in published))
        return published

    async def publish_batch(self, messages: Sequence[MessagePublish]) -> list[EntryResult]:
        """Enqueue messages as ``publish_many``, answering a result per message: on a fifo
        queue a message with a priority is refused alone (409), the others are enqueued."""
        try:
            return [published_result(p) for p in await self.publish_many(messages)]
        except PriorityOnFifoQueue as refused:
            allowed = [message for message in messages if message.priority == 0]
            published = iter(await self.publish_many(allowed) if allowed else [])
            return [
                published_result(next(published))
                if message.priority == 0
                else failed(None, refused)
                for message in messages
            ]

    async def ack_each(self, settled: Sequence[tuple[str, str]]) -> list[str | None]:
        """Acknowledge (id, receipt) pairs in one step; answer None for each that took, else
        why not (the queue worker's batched acks)."""
        outcomes = await self.ack_many(settled)
        return [
            None if (make := SETTLE_ERRORS.get(outcome)) is None else make(message_id).message
            for (message_id, _receipt), outcome in zip(settled, outcomes, strict=True)
        ]

    async def ack_batch(self, entries: Sequence[SettleEntry]) -> list[EntryResult]:
        """Acknowledge deliveries in one step, answering a result per delivery."""
        ids = [entry.id for entry in entries]
        outcomes = await self.ack_many([(entry.id, entry.receipt) for entry in entries])
        return settle_results(ids, outcomes)

    async def nack_batch(self, entries: Sequence[NackEntry]) -> list[EntryResult]:
        """Give deliveries back, answering a result per delivery."""
        return await settle_each(
            [entry.id for entry in entries],
            lambda i: self.nack(entries[i].id, entries[i].receipt, delay_s=entries[i].delay_s),
        )

    async def receive(self, *, consumer: str, limit: int = 10, wait_s: float = 0) -> list[Delivery]:
        """Lease up to ``limit`` messages to ``consumer``, waiting up to ``wait_s`` for one."""
        return await self.poll(lambda: self._receive_once(consumer, limit), wait_s)

    async def _receive_once(self, consumer: str, count: int) -> list[Delivery]:
        # With the consumer's other receives of this turn: one step leases for all of them.
        return await self.context.steps.run(
            (self.prefix, "receive", consumer),
            [None] * count,
            lambda places: self._receive_now(consumer, len(places)),
        )

    async def _receive_now(self, consumer: str, count: int) -> list[Delivery]:
        nonce = secrets.token_urlsafe(12)
        leased, swept = await self.run(
            "receive",
            consumer,
            str(count),
            nonce,
            self._housekeeping,
            extra_keys=[self.marker("receive", nonce)],
            what="receive messages",
        )
        self._count_swept(swept)
        deliveries = _deliveries(leased)
        self._count("delivered", len(deliveries))
        return deliveries

    async def ack(self, message_id: str, receipt: str) -> None:
        """Acknowledge a leased message: it is done and removed. Raise on a wrong receipt."""
        (settled,) = await self.ack_many([(message_id, receipt)])
        raise_for(settled, SETTLE_ERRORS, message_id)

    async def ack_many(self, settled: Sequence[tuple[str, str]]) -> list[Settlement]:
        """Acknowledge (id, receipt) pairs in one step; answer an outcome per pair.

        DONE acknowledged, REPEATED already acknowledged with this receipt (a repeat of an ack
        that took), NOT_FOUND or WRONG_RECEIPT.
        """
        if not settled:
            return []
        # With the other acks of this turn on the queue: one step for all of them.
        return await self.context.steps.run((self.prefix, "ack"), settled, self._ack_now)

    async def _ack_now(self, settled: Sequence[tuple[str, str]]) -> list[Settlement]:
        args = [part for pair in settled for part in pair]
        (statuses,) = await self.run("ack", self.sweep_limit, *args, what="acknowledge messages")
        outcomes = settlements(statuses)
        self._count("acked", outcomes.count(Settlement.DONE))
        return outcomes

    async def nack(self, message_id: str, receipt: str, *, delay_s: float = 0) -> None:
        """Give a leased message back: visible again after ``delay_s`` (or dead-lettered)."""
        status, swept = await self.run(
            "nack", message_id, receipt, milliseconds(delay_s), what="give back a message"
        )
        self._count_swept(swept)
        if raise_for(outcome_of(Settlement, status), SETTLE_ERRORS, message_id) is Settlement.DONE:
            self._count("nacked")
        self.wake()

    async def extend(
        self, message_id: str, receipt: str, *, visibility_timeout_s: float
    ) -> datetime:
        """Extend a lease to ``visibility_timeout_s`` from now; return when it now ends."""
        status, *lease = await self.run(
            "extend", message_id, receipt, milliseconds(visibility_timeout_s), what="extend a lease"
        )
        raise_for(outcome_of(Settlement, status), SETTLE_ERRORS, message_id)
        (lease_until,) = lease
        return from_ms(as_int(lease_until))

    async def in_flight_lines(self, message_id: str) -> list[str]:
        """Return the trace line a delivery of ``message_id`` in flight still owes (a delivery's
        line is written when it ends: see channel.lua)."""
        (line,) = await self.run("owed", message_id, what="read trace")
        return as_str(line).splitlines() if line else []

    async def counts(self) -> QueueCounts:
        """Return how many messages are ready, delayed, in flight and dead-lettered."""
        counts, swept = await self.run("stats", self._housekeeping, what="count messages")
        self._count_swept(swept)
        return _counts(counts)

    async def gauge(self, *, now_ms: float) -> QueueGauge:
        """Return the counts and the oldest ready age (at ``now_ms``) the metrics export."""
        counts, ends, swept = await self.run("gauge", self._housekeeping, what="gauge queue")
        self._count_swept(swept)
        created = [_created_ms(message_id) for message_id in as_str_list(ends)]
        oldest = min(created) if created else now_ms
        return QueueGauge(
            counts=_counts(counts), oldest_ready_age_s=max(0.0, now_ms - oldest) / 1000
        )

    async def dead_letters(
        self, *, offset: int = 0, limit: int = 100
    ) -> tuple[list[DeadLetter], int]:
        """Return a page of dead letters, oldest first, and how many there are."""
        rows, total, swept = await self.run(
            "dead_letters",
            self._housekeeping,
            str(offset),
            str(offset + limit - 1),
            what="read dead letters",
        )
        self._count_swept(swept)
        return [_dead_letter(row) for row in as_list(rows)], as_int(total)

    async def redrive(self, *, limit: int | None = None) -> int:
        """Put dead letters back in the queue, oldest first; return how many moved."""
        moved = 0
        while limit is None or moved < limit:
            batch = REDRIVE_BATCH if limit is None else min(REDRIVE_BATCH, limit - moved)
            nonce = secrets.token_urlsafe(12)
            (count,) = await self.run(
                "redrive",
                str(batch),
                extra_keys=[self.marker("redrive", nonce)],
                what="redrive dead letters",
            )
            moved += as_int(count)
            if as_int(count) < batch:
                break
        self._count("redriven", moved)
        if moved:
            self.wake()
        return moved

    def _count(self, event: QueueEvent, count: int = 1) -> None:
        self.context.counters.queue(self.name, event, count)

    def _count_swept(self, reply: Reply) -> None:
        # What a step's housekeeping (and a nack) did: leases expired, messages dead-lettered.
        expired, dead = as_int_list(reply)
        self._count("expired", expired)
        self._count("dead_lettered", dead)


def _created_ms(message_id: str) -> int:
    return parse_ulid(message_id) >> ULID_TIME_SHIFT


def _kind(reply: Reply) -> Kind:
    kind = as_str(reply)
    if kind == "fifo":
        return "fifo"
    if kind == "priority":
        return "priority"
    raise ScriptContractError(f"unknown queue kind {kind!r}")


def _counts(reply: Reply) -> QueueCounts:
    ready, delayed, in_flight, dead = as_int_list(reply)
    return QueueCounts(ready=ready, delayed=delayed, in_flight=in_flight, dead_lettered=dead)


def _deliveries(reply: Reply) -> list[Delivery]:
    ids, bodies, attempts, receipts, priorities, published, leases = columns(reply, 7)
    timestamp = timestamps()
    # Built without validation: every field is read in its type from the script's answer.
    return [
        trusted(
            Delivery,
            {
                "id": message_id,
                "body": parse_json(body),
                "attempt": attempt,
                "receipt": receipt,
                "priority": priority,
                "published_at": timestamp(published_at),
                "lease_expires_at": timestamp(lease_until),
            },
        )
        for message_id, body, attempt, receipt, priority, published_at, lease_until in zip(
            as_str_list(ids),
            as_str_list(bodies),
            as_int_list(attempts),
            as_str_list(receipts),
            as_int_list(priorities),
            published,
            leases,
            strict=True,
        )
    ]


def _dead_letter(reply: Reply) -> DeadLetter:
    message_id, body, priority, published_at, attempts, reason, dead_at = as_list(reply)
    return DeadLetter(
        id=as_str(message_id),
        body=parse_json(as_str(body)),
        priority=as_int(priority),
        attempts=as_int(attempts),
        reason=as_str(reason),
        published_at=from_ms(as_int(published_at)),
        dead_lettered_at=from_ms(as_int(dead_at)),
    )
