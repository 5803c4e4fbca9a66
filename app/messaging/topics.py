"""Topics: fan-out over a Redis stream, where every consumer group gets every message.

A topic is one stream; each subscriber is a consumer group on it, and within a group each
message is leased to one consumer at a time, under the same rules as a queue: a random receipt
per delivery, acknowledgement, a visibility timeout after which the message is delivered again,
``nack`` with a delay, and a per-group dead-letter list after ``max_deliveries``. The leases are
kept by the script (a hash and a sorted set per group); the stream's pending list holds each
entry from its first delivery until the group is done with it, which is what trimming reads.
Every step is one run of ``topic.lua`` on the topic's slot.

Trimming: each acknowledgement trims the stream to the oldest entry that some group still has
pending or has not yet been delivered, so no entry a group has not acknowledged is dropped. A
topic with no group keeps its entries (a group created later with ``start="earliest"`` gets
them); a group that stops consuming holds the stream's memory until it is deleted, which is
the price of that guarantee.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from app.messaging import keys
from app.messaging.channel import NOT_FOUND, Channel, milliseconds
from app.messaging.exceptions import GroupNotFound, TopicNotFound
from app.messaging.queues import raise_for_status
from app.messaging.schemas import (
    DeadLetter,
    Delivery,
    GroupCounts,
    Published,
    TopicCreate,
    TopicPublic,
    TopicPublish,
    check_name,
    from_ms,
)
from app.records.codec import compact_json
from app.scripting import LuaScript

if TYPE_CHECKING:
    from app.messaging.broker import Broker

TOPIC_SCRIPT = LuaScript.load(Path(__file__).with_name("topic.lua"))
GROUP_NOT_FOUND = -5
GROUP_START = {"earliest": "0", "latest": "$"}


class Topic(Channel):
    """A handle on one topic; cheap to make (``broker.topic(name)``)."""

    script = TOPIC_SCRIPT

    def __init__(self, *, broker: Broker, name: str) -> None:
        super().__init__(
            broker=broker,
            name=name,
            prefix=keys.topic_prefix(name),
            script_keys=keys.topic_keys(name),
        )

    def check(self, reply: list[Any], args: tuple[str, ...]) -> None:
        if reply[0] == NOT_FOUND:
            raise TopicNotFound(self.name)
        if reply[0] == GROUP_NOT_FOUND:
            raise GroupNotFound(self.name, args[0])

    async def create(self, settings: TopicCreate) -> bool:
        """Create the topic, or change its rules; return whether it is new."""
        (status,) = await self.run(
            "create",
            milliseconds(settings.visibility_timeout_s),
            str(settings.max_deliveries),
            what="create topic",
        )
        return bool(status == 1)

    async def info(self) -> TopicPublic:
        """Return the topic's rules, length and groups; raise TopicNotFound."""
        _, visibility_ms, max_deliveries, created_at, length, groups = await self.run(
            "config", what="read topic"
        )
        return TopicPublic(
            name=self.name,
            visibility_timeout_s=int(visibility_ms) / 1000,
            max_deliveries=int(max_deliveries),
            created_at=from_ms(created_at),
            length=int(length),
            groups=[
                GroupCounts(
                    name=name,
                    in_flight=int(pending),
                    undelivered=None if int(lag) < 0 else int(lag),
                    dead_lettered=int(dead),
                )
                for name, pending, lag, dead in groups
            ],
        )

    async def create_group(
        self, group: str, *, start: Literal["earliest", "latest"] = "earliest"
    ) -> bool:
        """Subscribe a new consumer group; return whether it is new (raise TopicNotFound)."""
        _, created = await self.run(
            "create_group",
            check_name(group, what="group"),
            GROUP_START[start],
            what="create group",
        )
        return bool(created)

    async def publish_many(self, messages: Sequence[TopicPublish]) -> list[Published]:
        """Append messages to the topic, in order; answer their ids (see Queue.publish_many)."""
        rows = [[compact_json(message.body), message.dedupe_id or ""] for message in messages]
        return await self.publish_rows(rows, what="publish to topic")

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
    ) -> list[Delivery]:
        """Lease up to ``limit`` of the group's messages to ``consumer``; wait up to ``wait_s``."""
        return await self.poll(lambda: self._receive_once(group, consumer, limit), wait_s)

    async def _receive_once(self, group: str, consumer: str, limit: int) -> list[Delivery]:
        _, leased = await self.run(
            "receive",
            group,
            consumer,
            str(limit),
            secrets.token_urlsafe(12),
            what="receive from topic",
        )
        return [
            # Built without validation: every field comes from the script, in its type.
            Delivery.model_construct(
                id=message_id,
                body=json.loads(body),
                attempt=int(attempt),
                receipt=receipt,
                published_at=from_ms(published_at),
                lease_expires_at=from_ms(lease_until),
            )
            for message_id, body, attempt, receipt, published_at, lease_until in leased
        ]

    async def ack_many(self, group: str, settled: Sequence[tuple[str, str]]) -> list[int]:
        """Acknowledge (id, receipt) pairs for ``group``; answer a status per pair."""
        if not settled:
            return []
        args = [part for pair in settled for part in pair]
        _, statuses = await self.run("ack", group, *args, what="acknowledge topic messages")
        return [int(status) for status in statuses]

    async def ack(self, group: str, message_id: str, receipt: str) -> None:
        """Acknowledge one message for ``group``; raise on a wrong receipt."""
        (status,) = await self.ack_many(group, [(message_id, receipt)])
        raise_for_status(status, message_id)

    async def nack(self, group: str, message_id: str, receipt: str, *, delay_s: float = 0) -> None:
        """Give a message back to ``group``: delivered again after ``delay_s``."""
        reply = await self.run(
            "nack",
            group,
            message_id,
            receipt,
            milliseconds(delay_s),
            what="give back a topic message",
        )
        raise_for_status(int(reply[1]), message_id)
        self.broker.notify(self.prefix)

    async def dead_letters(
        self, group: str, *, offset: int = 0, limit: int = 100
    ) -> tuple[list[DeadLetter], int]:
        """Return a page of the group's dead letters, oldest first, and how many there are."""
        _, rows, total = await self.run(
            "dead_letters",
            group,
            str(offset),
            str(offset + limit - 1),
            what="read topic dead letters",
        )
        letters = []
        for row in rows:
            raw = json.loads(row)
            letters.append(
                DeadLetter(
                    id=raw["id"],
                    body=json.loads(raw["body"]),
                    attempts=raw["attempts"],
                    reason=raw["reason"],
                    published_at=from_ms(raw["published_at"]),
                    dead_lettered_at=from_ms(raw["dead_at"]),
                )
            )
        return letters, int(total)
