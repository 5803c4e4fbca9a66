"""Topics: fan-out over a Redis stream, where every consumer group gets every message.

A topic is one stream; each subscriber is a consumer group on it, and within a group each
message is leased to one consumer at a time, under the same rules as a queue: a random receipt
per delivery, acknowledgement, a visibility timeout after which the message is delivered again,
``nack`` with a delay, and a per-group dead-letter list after ``max_deliveries``. The leases are
kept by the script (a hash and sorted sets per group). Groups read the stream with NOACK: the
stream's pending list would repeat what the leases say, at a cost per message on the primary
and again on its replica; instead each group keeps a sorted set of the entries it holds, and
the topic a hash of each group's count and oldest held entry (``keys.topic_holds``), which
trimming and the metrics read. Every step is one run of ``topic.lua`` on the topic's slot.

Trimming: each acknowledgement trims the stream to the oldest entry that some group still holds
or has not yet been delivered, so no entry a group has not acknowledged is dropped; the traces
of the entries it drops expire after the retention. A topic with no group keeps its entries (a
group created later with ``start="earliest"`` gets them); a group that stops consuming holds
the stream's memory until it is deleted, which is the price of that guarantee.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel
from redis.exceptions import ResponseError

from app.messaging import keys
from app.messaging.channel import (
    CHANNEL_LUA,
    SETTLE_ERRORS,
    Channel,
    ChannelContext,
    ChannelErrors,
    Settlement,
    columns,
    milliseconds,
    published_result,
    settle_each,
    settle_results,
    settlements,
    timestamps,
)
from app.messaging.exceptions import GroupNotFound, TopicNotFound
from app.messaging.metrics import TopicEvent
from app.messaging.schemas import (
    EntryResult,
    GroupCounts,
    NackEntry,
    Published,
    SettleEntry,
    TopicCreate,
    TopicDeadLetter,
    TopicDelivery,
    TopicPublic,
    TopicPublish,
    check_name,
    from_ms,
)
from app.records.codec import compact_json, parse_json
from app.redis import RedisStore
from app.schemas import trusted
from app.scripting import (
    LuaScript,
    Reply,
    as_int,
    as_int_list,
    as_list,
    as_str,
    as_str_list,
    outcome_of,
    raise_for,
)
from app.stream_gauges import Held

TOPIC_SCRIPT = LuaScript.load(Path(__file__).with_name("topic.lua"), CHANNEL_LUA)
GROUP_START = {"earliest": "0", "latest": "$"}
# topic.lua's held-entry scores: an entry id as milliseconds * SEQUENCES + sequence.
SEQUENCES = 1000


class TopicOutcome(IntEnum):
    """What a step of ``topic.lua`` answers first (a settling step's own outcome follows)."""

    DONE = 1
    # create: the topic existed; its rules are updated.
    EXISTED = 0
    NOT_FOUND = -1
    GROUP_NOT_FOUND = -5


TOPIC_ERRORS: ChannelErrors[TopicOutcome] = {
    TopicOutcome.NOT_FOUND: lambda topic, _subject: TopicNotFound(topic),
    # The subject is the group the step names.
    TopicOutcome.GROUP_NOT_FOUND: GroupNotFound,
}


class StoredDeadLetter(BaseModel):
    """A group's dead letter as ``topic.lua`` stores it: JSON, times in server milliseconds."""

    id: str
    # The message body's own JSON text, as published.
    body: str
    attempts: int
    reason: str
    published_at: int
    dead_at: int


class Topic(Channel[TopicOutcome]):
    """A handle on one topic; cheap to make (``broker.topic(name)``)."""

    def __init__(self, *, context: ChannelContext, name: str) -> None:
        super().__init__(
            context=context,
            name=name,
            prefix=keys.topic_prefix(name),
            registry=keys.TOPIC_REGISTRY,
            script_keys=keys.topic_keys(name),
            script=TOPIC_SCRIPT,
            outcomes=TopicOutcome,
            errors=TOPIC_ERRORS,
        )

    async def create(self, settings: TopicCreate) -> bool:
        """Create the topic, or change its rules; return whether it is new."""
        outcome, _ = await self.answer(
            "create",
            milliseconds(settings.visibility_timeout_s),
            str(settings.max_deliveries),
            what="create topic",
        )
        created = self.check(outcome) is TopicOutcome.DONE
        await self.register()
        return created

    async def info(self) -> TopicPublic:
        """Return the topic's rules, length and groups; raise TopicNotFound."""
        names = await self._group_names()
        visibility_ms, max_deliveries, created_at, length, groups = await self.run(
            "config",
            *names,
            extra_keys=[key for name in names for key in keys.group_keys(self.name, name)],
            what="read topic",
        )
        return TopicPublic(
            name=self.name,
            visibility_timeout_s=as_int(visibility_ms) / 1000,
            max_deliveries=as_int(max_deliveries),
            created_at=from_ms(as_int(created_at)),
            length=as_int(length),
            groups=[_group_counts(row) for row in as_list(groups)],
        )

    async def _group_names(self) -> list[str]:
        """Return the names of the topic's consumer groups (none when it has no stream yet)."""
        stream = keys.topic_keys(self.name)[1]
        try:
            found = await self.context.store.call(
                stream, "XINFO", "GROUPS", stream, what="read topic groups"
            )
        except ResponseError as exc:
            if "no such key" in str(exc):
                return []
            raise
        # A dict per group, or a flat list of names and values, depending on the protocol.
        return [
            str(group["name"] if isinstance(group, dict) else group[group.index("name") + 1])
            for group in found
        ]

    async def in_flight_lines(self, message_id: str) -> list[str]:
        """Return the trace lines the deliveries of ``message_id`` in flight (one per group at
        most) still owe (a delivery's line is written when it ends: see channel.lua)."""
        names = await self._group_names()
        (lines,) = await self.run(
            "owed",
            message_id,
            *names,
            extra_keys=[key for name in names for key in self._group_keys(name)],
            what="read trace",
        )
        return as_str(lines).splitlines() if lines else []

    def _group_keys(self, group: str) -> list[str]:
        return keys.group_keys(self.name, group)

    async def create_group(
        self, group: str, *, start: Literal["earliest", "latest"] = "earliest"
    ) -> bool:
        """Subscribe a new consumer group; return whether it is new (raise TopicNotFound)."""
        (created,) = await self.run(
            "create_group",
            check_name(group, what="group"),
            GROUP_START[start],
            subject=group,
            what="create group",
        )
        return bool(as_int(created))

    async def publish_many(self, messages: Sequence[TopicPublish]) -> list[Published]:
        """Append messages to the topic, in order; answer their ids (see Queue.publish_many)."""
        rows = [[compact_json(message.body), message.dedupe_id or ""] for message in messages]
        published = await self.publish_rows(rows, what="publish to topic")
        self._count("published", sum(not p.duplicate for p in published))
        return published

    async def publish_batch(self, messages: Sequence[TopicPublish]) -> list[EntryResult]:
        """Append messages as ``publish_many``, answering a result per message."""
        return [published_result(p) for p in await self.publish_many(messages)]

    async def ack_batch(self, group: str, entries: Sequence[SettleEntry]) -> list[EntryResult]:
        """Acknowledge ``group``'s deliveries in one step, answering a result per delivery."""
        ids = [entry.id for entry in entries]
        outcomes = await self.ack_many(group, [(entry.id, entry.receipt) for entry in entries])
        return settle_results(ids, outcomes)

    async def nack_batch(self, group: str, entries: Sequence[NackEntry]) -> list[EntryResult]:
        """Give ``group``'s deliveries back, answering a result per delivery."""
        return await settle_each(
            [entry.id for entry in entries],
            lambda i: self.nack(
                group, entries[i].id, entries[i].receipt, delay_s=entries[i].delay_s
            ),
        )

    async def publish(self, message: TopicPublish) -> Published:
        """Append one message to the topic."""
        return (await self.publish_many([message]))[0]

    async def receive(
        self,
        group: str,
        *,
        consumer: str,
        limit: int = 10,
        wait_s: float = 0,
    ) -> list[TopicDelivery]:
        """Lease up to ``limit`` of the group's messages to ``consumer``; wait up to ``wait_s``."""
        return await self.poll(lambda: self._receive_once(group, consumer, limit), wait_s)

    async def _receive_once(self, group: str, consumer: str, limit: int) -> list[TopicDelivery]:
        # With the consumer's other receives of this turn: one step leases for all of them.
        return await self.context.steps.run(
            (self.prefix, "receive", group, consumer),
            [None] * limit,
            lambda places: self._receive_now(group, consumer, len(places)),
        )

    async def _receive_now(self, group: str, consumer: str, limit: int) -> list[TopicDelivery]:
        nonce = secrets.token_urlsafe(12)
        leased, dead = await self.run(
            "receive",
            group,
            consumer,
            str(limit),
            nonce,
            extra_keys=[*self._group_keys(group), self.marker("receive", f"{group}:{nonce}")],
            subject=group,
            what="receive from topic",
        )
        self._count("dead_lettered", as_int(dead))
        deliveries = _deliveries(leased)
        self._count("delivered", len(deliveries))
        return deliveries

    async def ack_many(self, group: str, settled: Sequence[tuple[str, str]]) -> list[Settlement]:
        """Acknowledge (id, receipt) pairs for ``group``; answer an outcome per pair."""
        if not settled:
            return []
        # With the group's other acks of this turn: one step for all of them.
        return await self.context.steps.run(
            (self.prefix, "ack", group),
            settled,
            lambda merged: self._ack_now(group, merged),
        )

    async def _ack_now(self, group: str, settled: Sequence[tuple[str, str]]) -> list[Settlement]:
        args = [part for pair in settled for part in pair]
        (statuses,) = await self.run(
            "ack",
            group,
            self.sweep_limit,
            *args,
            extra_keys=self._group_keys(group),
            subject=group,
            what="acknowledge topic messages",
        )
        outcomes = settlements(statuses)
        self._count("acked", outcomes.count(Settlement.DONE))
        return outcomes

    async def ack(self, group: str, message_id: str, receipt: str) -> None:
        """Acknowledge one message for ``group``; raise on a wrong receipt."""
        (settled,) = await self.ack_many(group, [(message_id, receipt)])
        raise_for(settled, SETTLE_ERRORS, message_id)

    async def nack(self, group: str, message_id: str, receipt: str, *, delay_s: float = 0) -> None:
        """Give a message back to ``group``: delivered again after ``delay_s``."""
        (status,) = await self.run(
            "nack",
            group,
            message_id,
            receipt,
            milliseconds(delay_s),
            extra_keys=self._group_keys(group),
            subject=group,
            what="give back a topic message",
        )
        if raise_for(outcome_of(Settlement, status), SETTLE_ERRORS, message_id) is Settlement.DONE:
            self._count("nacked")
        self.wake()

    async def dead_letters(
        self, group: str, *, offset: int = 0, limit: int = 100
    ) -> tuple[list[TopicDeadLetter], int]:
        """Return a page of the group's dead letters, oldest first, and how many there are."""
        rows, total = await self.run(
            "dead_letters",
            group,
            str(offset),
            str(offset + limit - 1),
            extra_keys=self._group_keys(group),
            subject=group,
            what="read topic dead letters",
        )
        return [_dead_letter(row) for row in as_list(rows)], as_int(total)

    def _count(self, event: TopicEvent, count: int = 1) -> None:
        self.context.counters.topic(self.name, event, count)


async def read_holds(store: RedisStore, name: str) -> dict[str, Held]:
    """Return what each group of the topic ``name`` holds (topic.lua's holds hash: a count,
    then the oldest held entry's score when it has one)."""
    key = keys.topic_holds(name)
    found = await store.call(key, "HGETALL", key, what="metrics: topic holds")
    holds = {}
    for group, record in found.items():
        count, *oldest = as_str(record).split()
        oldest_ms = int(oldest[0]) // SEQUENCES if oldest else None
        holds[as_str(group)] = Held(entries=int(count), oldest_ms=oldest_ms)
    return holds


def _group_counts(reply: Reply) -> GroupCounts:
    name, pending, lag, dead = as_list(reply)
    undelivered = as_int(lag)
    return GroupCounts(
        name=as_str(name),
        in_flight=as_int(pending),
        # The server cannot always tell a group's lag: the script answers -1 then.
        undelivered=None if undelivered < 0 else undelivered,
        dead_lettered=as_int(dead),
    )


def _deliveries(reply: Reply) -> list[TopicDelivery]:
    ids, bodies, attempts, receipts, published, leases = columns(reply, 6)
    timestamp = timestamps()
    # Built without validation: every field is read in its type from the script's answer.
    return [
        trusted(
            TopicDelivery,
            {
                "id": message_id,
                "body": parse_json(body),
                "attempt": attempt,
                "receipt": receipt,
                "published_at": timestamp(published_at),
                "lease_expires_at": timestamp(lease_until),
            },
        )
        for message_id, body, attempt, receipt, published_at, lease_until in zip(
            as_str_list(ids),
            as_str_list(bodies),
            as_int_list(attempts),
            as_str_list(receipts),
            published,
            leases,
            strict=True,
        )
    ]


def _dead_letter(reply: Reply) -> TopicDeadLetter:
    stored = StoredDeadLetter.model_validate_json(as_str(reply))
    return TopicDeadLetter(
        id=stored.id,
        body=parse_json(stored.body),
        attempts=stored.attempts,
        reason=stored.reason,
        published_at=from_ms(stored.published_at),
        dead_lettered_at=from_ms(stored.dead_at),
    )
